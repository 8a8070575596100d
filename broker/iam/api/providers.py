"""IAM actions on identity providers: SAML providers (CreateSAMLProvider and the rest) and
OpenID Connect providers (CreateOpenIDConnectProvider and the rest).

Each action is authorized on the provider's ARN (``arn:aws:iam::ACCOUNT:saml-provider/NAME``,
``arn:aws:iam::ACCOUNT:oidc-provider/HOST[:PORT][/PATH]``), with the provider's tags as
``aws:ResourceTag/KEY`` once it exists; the List actions, which name no provider, on ``*``, as
AWS's authorization reference has it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from broker.aws import arn
from broker.aws.errors import InvalidInput, NoSuchEntity
from broker.aws.query import Call, Operation, Result
from broker.aws.shapes import String, optional, required, struct
from broker.iam.api.common import (
    IamContext,
    Registry,
    paged,
    request_tags,
    resource_tags,
    tags_of,
)
from broker.iam.entities import ALLOWED, oidc_identifier, sorted_tags
from broker.iam.oidc_providers import OidcProviders
from broker.iam.records import paginate

# The broker's own action (not in AWS's model): a static JWKS for an OIDC provider.
SET_JWKS_REQUEST = struct(
    required("OpenIDConnectProviderArn", String(min=20, max=2048)),
    optional("Jwks", String(min=1, max=100_000)),
)

# Trusted identity propagation needs IAM Identity Center, which the broker does not have.
_IDENTITY_CENTER = ("ContextProvider", "IdentityCenterInstanceArn", "RemoveContextProvider",
                    "RemoveIdentityCenterInstance")


def _refuse_identity_center(params: Mapping[str, Any]) -> None:
    for name in _IDENTITY_CENTER:
        if params.get(name) not in (None, False):
            raise InvalidInput(
                f"{name} configures trusted identity propagation with IAM Identity Center, "
                "which this broker does not have.")


# The SAML providers IAM Identity Center provisions in the accounts it assigns: theirs alone
# (an account's administrator may delete one, as on AWS — provisioning makes it again — but
# not make or change one, which would put their own identity provider behind the roles).
_IDENTITY_CENTER_PROVIDER = re.compile(r"AWSSSO_[0-9a-f]+_DO_NOT_DELETE", re.IGNORECASE)


def _refuse_reserved_name(name: str) -> None:
    if _IDENTITY_CENTER_PROVIDER.fullmatch(name):
        raise InvalidInput(f"The SAML provider name {name} is reserved for IAM Identity "
                           "Center.")


def operations(ctx: IamContext) -> list[Operation]:
    iam = ctx.iam
    ops = Registry()

    async def allow_on(call: Call, action: str, provider_arn: str,
                       get: Callable[[str, str], Awaitable[Any]],
                       extra: Mapping[str, str | list[str]] | None = None) -> None:
        """Authorize on the provider the ARN names (found by ``get``), with its tags; on the
        ARN as given when there is none (the action then fails with NoSuchEntity, if the
        caller may try it)."""
        try:
            provider = await get(call.principal.account_id, provider_arn)
        except NoSuchEntity:
            await ctx.allow(call, action, provider_arn, extra)
            return
        await ctx.allow(call, action, provider.arn,
                        {**resource_tags(provider.tags), **(extra or {})})

    async def allow_on_provider(call: Call, action: str, provider_arn: str,
                                extra: Mapping[str, str | list[str]] | None = None) -> None:
        await allow_on(call, action, provider_arn, iam.saml_providers.get, extra)

    @ops.action("CreateSAMLProvider")
    async def create_saml_provider(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        tags = tags_of(p)
        await ctx.allow(call, "CreateSAMLProvider", arn.saml_provider(account, p["Name"]),
                        request_tags(tags))
        _refuse_identity_center(p)
        _refuse_reserved_name(p["Name"])
        provider = await iam.saml_providers.create(
            account, p["Name"], p["SAMLMetadataDocument"], tags=tags,
            assertion_encryption_mode=p.get("AssertionEncryptionMode", ALLOWED),
            private_key=p.get("AddPrivateKey"))
        out: dict[str, Any] = {"SAMLProviderArn": provider.arn}
        if provider.tags:
            out["Tags"] = sorted_tags(provider.tags)
        return out

    @ops.action("GetSAMLProvider")
    async def get_saml_provider(call: Call) -> Result:
        provider_arn = call.params["SAMLProviderArn"]
        await allow_on_provider(call, "GetSAMLProvider", provider_arn)
        provider = await iam.saml_providers.get(call.principal.account_id, provider_arn)
        return provider.wire()

    @ops.action("ListSAMLProviders")
    async def list_saml_providers(call: Call) -> Result:
        await ctx.allow(call, "ListSAMLProviders", "*")
        providers = await iam.saml_providers.listing(call.principal.account_id)
        return {"SAMLProviderList": [p.wire(listing=True) for p in providers]}

    @ops.action("UpdateSAMLProvider")
    async def update_saml_provider(call: Call) -> Result:
        p = call.params
        await allow_on_provider(call, "UpdateSAMLProvider", p["SAMLProviderArn"])
        _refuse_identity_center(p)
        _refuse_reserved_name(p["SAMLProviderArn"].rsplit("/", 1)[-1])
        provider = await iam.saml_providers.update(
            call.principal.account_id, p["SAMLProviderArn"],
            metadata=p.get("SAMLMetadataDocument"),
            assertion_encryption_mode=p.get("AssertionEncryptionMode"),
            add_private_key=p.get("AddPrivateKey"),
            remove_private_key=p.get("RemovePrivateKey"))
        return {"SAMLProviderArn": provider.arn}

    @ops.action("DeleteSAMLProvider")
    async def delete_saml_provider(call: Call) -> Result:
        provider_arn = call.params["SAMLProviderArn"]
        await allow_on_provider(call, "DeleteSAMLProvider", provider_arn)
        await iam.saml_providers.delete(call.principal.account_id, provider_arn)
        return None

    @ops.action("TagSAMLProvider")
    async def tag_saml_provider(call: Call) -> Result:
        p = call.params
        tags = tags_of(p)
        await allow_on_provider(call, "TagSAMLProvider", p["SAMLProviderArn"],
                                request_tags(tags))
        await iam.saml_providers.retag(call.principal.account_id, p["SAMLProviderArn"],
                                       add=tags)
        return None

    @ops.action("UntagSAMLProvider")
    async def untag_saml_provider(call: Call) -> Result:
        p = call.params
        keys = tuple(p["TagKeys"])
        await allow_on_provider(call, "UntagSAMLProvider", p["SAMLProviderArn"],
                                {"aws:TagKeys": list(keys)})
        await iam.saml_providers.retag(call.principal.account_id, p["SAMLProviderArn"],
                                       remove=keys)
        return None

    @ops.action("ListSAMLProviderTags")
    async def list_saml_provider_tags(call: Call) -> Result:
        p = call.params
        await allow_on_provider(call, "ListSAMLProviderTags", p["SAMLProviderArn"])
        provider = await iam.saml_providers.get(call.principal.account_id, p["SAMLProviderArn"])
        page = paginate(list(provider.tags), lambda t: t.key, p.get("Marker"),
                        p.get("MaxItems"))
        return paged(page, "Tags", lambda t: t.wire())

    def oidc() -> OidcProviders:
        return iam.oidc_providers

    async def allow_on_oidc(call: Call, action: str, provider_arn: str,
                            extra: Mapping[str, str | list[str]] | None = None) -> None:
        await allow_on(call, action, provider_arn, oidc().get, extra)

    @ops.action("CreateOpenIDConnectProvider")
    async def create_oidc_provider(call: Call) -> Result:
        p, account = call.params, call.principal.account_id
        tags = tags_of(p)
        url = p["Url"]
        await ctx.allow(call, "CreateOpenIDConnectProvider",
                        arn.oidc_provider(account, oidc_identifier(url)), request_tags(tags))
        _refuse_identity_center(p)
        provider = await oidc().create(
            account, url, client_ids=p.get("ClientIDList", []),
            thumbprints=p.get("ThumbprintList", []), tags=tags)
        out: dict[str, Any] = {"OpenIDConnectProviderArn": provider.arn}
        if provider.tags:
            out["Tags"] = sorted_tags(provider.tags)
        return out

    @ops.action("GetOpenIDConnectProvider")
    async def get_oidc_provider(call: Call) -> Result:
        provider_arn = call.params["OpenIDConnectProviderArn"]
        await allow_on_oidc(call, "GetOpenIDConnectProvider", provider_arn)
        return (await oidc().get(call.principal.account_id, provider_arn)).wire()

    @ops.action("ListOpenIDConnectProviders")
    async def list_oidc_providers(call: Call) -> Result:
        await ctx.allow(call, "ListOpenIDConnectProviders", "*")
        providers = await oidc().listing(call.principal.account_id)
        return {"OpenIDConnectProviderList": [{"Arn": p.arn} for p in providers]}

    @ops.action("DeleteOpenIDConnectProvider")
    async def delete_oidc_provider(call: Call) -> Result:
        provider_arn = call.params["OpenIDConnectProviderArn"]
        await allow_on_oidc(call, "DeleteOpenIDConnectProvider", provider_arn)
        await oidc().delete(call.principal.account_id, provider_arn)
        return None

    @ops.action("AddClientIDToOpenIDConnectProvider")
    async def add_client_id(call: Call) -> Result:
        p = call.params
        await allow_on_oidc(call, "AddClientIDToOpenIDConnectProvider",
                            p["OpenIDConnectProviderArn"])
        await oidc().add_client_id(call.principal.account_id, p["OpenIDConnectProviderArn"],
                                   p["ClientID"])
        return None

    @ops.action("RemoveClientIDFromOpenIDConnectProvider")
    async def remove_client_id(call: Call) -> Result:
        p = call.params
        await allow_on_oidc(call, "RemoveClientIDFromOpenIDConnectProvider",
                            p["OpenIDConnectProviderArn"])
        await oidc().remove_client_id(call.principal.account_id,
                                      p["OpenIDConnectProviderArn"], p["ClientID"])
        return None

    @ops.action("UpdateOpenIDConnectProviderThumbprint")
    async def update_thumbprint(call: Call) -> Result:
        p = call.params
        await allow_on_oidc(call, "UpdateOpenIDConnectProviderThumbprint",
                            p["OpenIDConnectProviderArn"])
        await oidc().set_thumbprints(call.principal.account_id, p["OpenIDConnectProviderArn"],
                                     p["ThumbprintList"])
        return None

    @ops.action("TagOpenIDConnectProvider")
    async def tag_oidc_provider(call: Call) -> Result:
        p = call.params
        tags = tags_of(p)
        await allow_on_oidc(call, "TagOpenIDConnectProvider", p["OpenIDConnectProviderArn"],
                            request_tags(tags))
        await oidc().retag(call.principal.account_id, p["OpenIDConnectProviderArn"], add=tags)
        return None

    @ops.action("UntagOpenIDConnectProvider")
    async def untag_oidc_provider(call: Call) -> Result:
        p = call.params
        keys = tuple(p["TagKeys"])
        await allow_on_oidc(call, "UntagOpenIDConnectProvider", p["OpenIDConnectProviderArn"],
                            {"aws:TagKeys": list(keys)})
        await oidc().retag(call.principal.account_id, p["OpenIDConnectProviderArn"],
                         remove=keys)
        return None

    @ops.action("ListOpenIDConnectProviderTags")
    async def list_oidc_provider_tags(call: Call) -> Result:
        p = call.params
        await allow_on_oidc(call, "ListOpenIDConnectProviderTags",
                            p["OpenIDConnectProviderArn"])
        provider = await oidc().get(call.principal.account_id, p["OpenIDConnectProviderArn"])
        page = paginate(list(provider.tags), lambda t: t.key, p.get("Marker"),
                        p.get("MaxItems"))
        return paged(page, "Tags", lambda t: t.wire())

    @ops.action("SetOpenIDConnectProviderJWKS", shape=SET_JWKS_REQUEST)
    async def set_jwks(call: Call) -> Result:
        """The broker's own action: a static JWKS for the provider (Jwks absent: fetch the
        provider's keys again)."""
        p = call.params
        await allow_on_oidc(call, "SetOpenIDConnectProviderJWKS",
                            p["OpenIDConnectProviderArn"])
        await oidc().set_jwks(call.principal.account_id, p["OpenIDConnectProviderArn"],
                            p.get("Jwks"))
        return None

    return ops.operations
