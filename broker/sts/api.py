"""STS actions of the Query protocol: authorization and result rendering. Input shapes come
from broker.sts.model (generated from AWS's model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.authz import Authorizer
from broker.aws import arn
from broker.aws.errors import (
    AccessDenied,
    InvalidAuthorizationMessage,
    InvalidIdentityToken,
    ValidationError,
)
from broker.aws.query import STS, Call, Operation, Result
from broker.organizations import root_tasks
from broker.principal import Principal
from broker.sts import model
from broker.sts.saml import RolePair, SamlFederation, decode, name_qualifier, subject_type
from broker.sts.service import IssuedCredentials, StsService
from broker.sts.web_identity import WebIdentityFederation

MAX_POLICY_ARNS = 10


def credentials(issued: IssuedCredentials) -> dict[str, Any]:
    return {
        "AccessKeyId": issued.session.access_key_id,
        "SecretAccessKey": issued.session.secret_access_key,
        "SessionToken": issued.token,
        "Expiration": issued.session.expiration,
    }


def _federated(result: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return result["Credentials"]["AccessKeyId"], result["FederatedUser"]["Arn"]


def _assumed(result: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return result["Credentials"]["AccessKeyId"], result["AssumedRoleUser"]["Arn"]


def _session(result: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return result["Credentials"]["AccessKeyId"], None


def policy_arns(params: Mapping[str, Any]) -> tuple[str, ...]:
    descriptors = params.get("PolicyArns", [])
    if len(descriptors) > MAX_POLICY_ARNS:
        raise ValidationError.from_faults([
            f"Value '{len(descriptors)} policy ARNs' at 'policyArns' failed to satisfy "
            f"constraint: Member must have length less than or equal to {MAX_POLICY_ARNS}"
        ])
    faults = [
        f"Value null at 'policyArns.{i}.member.arn' failed to satisfy constraint: "
        "Member must not be null"
        for i, d in enumerate(descriptors, 1) if "arn" not in d
    ]
    if faults:
        raise ValidationError.from_faults(faults)
    return tuple(d["arn"] for d in descriptors)


def request_keys(call: Call) -> dict[str, str]:
    """The aws:* keys of an unsigned request (no caller: only what the request itself says)."""
    keys = {"aws:SecureTransport": "true" if call.secure else "false"}
    if call.source_ip:
        keys["aws:SourceIp"] = call.source_ip
    if call.user_agent:
        keys["aws:UserAgent"] = call.user_agent
    return keys


def tags(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((t["Key"], t["Value"]) for t in params.get("Tags", []))


async def authorized_assume_role(
        sts: StsService, authz: Authorizer, caller: Principal, role_arn: str, session_name: str,
        *, source_ip: str | None = None, user_agent: str | None = None, secure: bool = False,
        duration: int | None = None, policy: str | None = None,
        policy_arns: tuple[str, ...] = (), tags: tuple[tuple[str, str], ...] = (),
        transitive_keys: tuple[str, ...] = (), external_id: str | None = None,
        source_identity: str | None = None, serial_number: str | None = None,
        token_code: str | None = None, minimum_token_size: int = 0) -> IssuedCredentials:
    """AssumeRole for ``caller``: the role's trust policy and the caller's own policies both
    allow it (and sts:TagSession / sts:SetSourceIdentity when asked), or AccessDenied. The
    Query action and the console's switch-role both run it."""
    if caller.is_root:
        # AWS's rule, whatever the trust policy says: use a user or a role.
        raise AccessDenied("Roles may not be assumed by root accounts.")

    def refused(action: str) -> AccessDenied:
        # AWS's bare sentence, for a missing role and a refusing one alike: nobody learns
        # which roles exist, or what another account's trust policy asks for, by asking.
        return AccessDenied(f"User: {caller.arn} is not authorized to perform: {action} "
                            f"on resource: {role_arn}")

    # The code first, so that the trust policy sees aws:MultiFactorAuthPresent (a long-term
    # key's request has the key only when it carries a valid code).
    mfa = await sts.mfa(caller, serial_number, token_code)
    role = await sts.role(role_arn)
    if role is None:
        raise refused("sts:AssumeRole")
    context: dict[str, str | list[str]] = {"sts:RoleSessionName": session_name}
    if mfa:
        context["aws:MultiFactorAuthPresent"] = "true"
        context["aws:MultiFactorAuthAge"] = "0"
    if external_id is not None:
        context["sts:ExternalId"] = external_id
    if source_identity is not None:
        context["sts:SourceIdentity"] = source_identity
    if tags:
        context["aws:TagKeys"] = [k for k, _ in tags]
        context.update({f"aws:RequestTag/{k}": v for k, v in tags})
    if transitive_keys:
        context["sts:TransitiveTagKeys"] = list(transitive_keys)
    trust = authz.permissions.trust_of(role)
    needed = ["sts:AssumeRole"]
    if tags:
        needed.append("sts:TagSession")
    if source_identity is not None:
        needed.append("sts:SetSourceIdentity")
    for action in needed:
        try:
            await authz.check(caller, action, role.arn, source_ip=source_ip,
                              user_agent=user_agent, secure=secure, context=context,
                              resource_policies=(trust,), resource_account=role.account_id,
                              requires_resource_policy=True)
        except AccessDenied:
            raise refused(action) from None
    return await sts.assume_role(
        caller, role, session_name, duration=duration, policy=policy,
        policy_arns=policy_arns, tags=tags, transitive_keys=transitive_keys,
        source_identity=source_identity, mfa=mfa, minimum_token_size=minimum_token_size)


def operations(sts: StsService, authz: Authorizer, federation: SamlFederation,
               web_identity: WebIdentityFederation) -> list[Operation]:
    async def allow(call: Call, action: str, resource: str, **kwargs: Any) -> None:
        await authz.check(call.principal, action, resource, source_ip=call.source_ip,
                          user_agent=call.user_agent, secure=call.secure, **kwargs)

    async def get_caller_identity(call: Call) -> Result:
        caller = call.principal
        return {"UserId": caller.user_id, "Account": caller.account_id, "Arn": caller.arn}

    async def get_session_token(call: Call) -> Result:
        p = call.params
        await allow(call, "sts:GetSessionToken", call.principal.arn)
        issued = await sts.get_session_token(
            call.principal,
            duration=p.get("DurationSeconds"),
            serial_number=p.get("SerialNumber"),
            token_code=p.get("TokenCode"),
            minimum_token_size=p.get("MinimumSessionTokenSize", 0),
        )
        return {
            "Credentials": credentials(issued),
            "SessionTokenUtilization": issued.token_utilization,
            "SessionTokenSize": len(issued.token),
        }

    async def get_federation_token(call: Call) -> Result:
        p = call.params
        caller = call.principal
        federated_arn = arn.federated_user(caller.account_id, p["Name"])
        await allow(call, "sts:GetFederationToken", federated_arn)
        if p.get("Tags"):
            await allow(call, "sts:TagSession", federated_arn)
        issued = await sts.get_federation_token(
            caller,
            p["Name"],
            duration=p.get("DurationSeconds"),
            policy=p.get("Policy"),
            policy_arns=policy_arns(p),
            tags=tags(p),
            minimum_token_size=p.get("MinimumSessionTokenSize", 0),
        )
        return {
            "Credentials": credentials(issued),
            "FederatedUser": {
                "FederatedUserId": issued.session.user_id,
                "Arn": issued.session.arn,
            },
            "PackedPolicySize": issued.packed_policy_size,
            "SessionTokenUtilization": issued.token_utilization,
            "SessionTokenSize": len(issued.token),
        }

    async def assume_role(call: Call) -> Result:
        p = call.params
        issued = await authorized_assume_role(
            sts, authz, call.principal, p["RoleArn"], p["RoleSessionName"],
            source_ip=call.source_ip, user_agent=call.user_agent, secure=call.secure,
            duration=p.get("DurationSeconds"),
            policy=p.get("Policy"),
            policy_arns=policy_arns(p),
            tags=tags(p),
            transitive_keys=tuple(p.get("TransitiveTagKeys", [])),
            external_id=p.get("ExternalId"),
            source_identity=p.get("SourceIdentity"),
            serial_number=p.get("SerialNumber"),
            token_code=p.get("TokenCode"),
            minimum_token_size=p.get("MinimumSessionTokenSize", 0),
        )
        session = issued.session
        return {
            "Credentials": credentials(issued),
            "AssumedRoleUser": {"AssumedRoleId": session.user_id, "Arn": session.arn},
            "PackedPolicySize": issued.packed_policy_size,
            "SourceIdentity": session.source_identity,
            "SessionTokenUtilization": issued.token_utilization,
            "SessionTokenSize": len(issued.token),
        }

    async def assume_role_with_saml(call: Call) -> Result:
        p = call.params
        xml = decode(p["SAMLAssertion"])
        verified = await federation.verify(xml, p["PrincipalArn"])
        role = await federation.role(verified, RolePair(p["RoleArn"], p["PrincipalArn"]))
        await federation.consume(verified)
        issued = await federation.assume(
            verified, role,
            duration=p.get("DurationSeconds"),
            policy=p.get("Policy"),
            policy_arns=policy_arns(p),
            extra_context=request_keys(call),
            minimum_token_size=p.get("MinimumSessionTokenSize", 0),
        )
        session, a, provider = issued.session, verified.assertion, verified.provider
        return {
            "Credentials": credentials(issued),
            "AssumedRoleUser": {"AssumedRoleId": session.user_id, "Arn": session.arn},
            "PackedPolicySize": issued.packed_policy_size,
            "Subject": a.subject,
            "SubjectType": subject_type(a.subject_format),
            "Issuer": a.issuer,
            "Audience": a.recipient,
            "NameQualifier": name_qualifier(a.issuer, provider.account_id, provider.name),
            "SourceIdentity": session.source_identity,
            "SessionTokenUtilization": issued.token_utilization,
            "SessionTokenSize": len(issued.token),
        }

    async def assume_role_with_web_identity(call: Call) -> Result:
        p = call.params
        if "ProviderId" in p:
            # OAuth 2.0 access tokens (Login with Amazon, Facebook) need ProviderId; the broker
            # accepts OpenID Connect ID tokens only, which AWS asks to send without it.
            raise InvalidIdentityToken("ProviderId is only for OAuth 2.0 access tokens, which "
                                       "this broker does not accept; send an OpenID Connect ID "
                                       "token without ProviderId.")
        verified = await web_identity.verify(p["WebIdentityToken"], p["RoleArn"])
        role = await web_identity.role(p["RoleArn"])
        issued = await web_identity.assume(
            verified, role, p["RoleSessionName"],
            duration=p.get("DurationSeconds"),
            policy=p.get("Policy"),
            policy_arns=policy_arns(p),
            extra_context=request_keys(call),
            minimum_token_size=p.get("MinimumSessionTokenSize", 0),
        )
        session, claims = issued.session, verified.claims
        return {
            "Credentials": credentials(issued),
            "SubjectFromWebIdentityToken": claims.subject,
            "AssumedRoleUser": {"AssumedRoleId": session.user_id, "Arn": session.arn},
            "PackedPolicySize": issued.packed_policy_size,
            "Provider": verified.provider.arn,
            "Audience": claims.audience,
            "SourceIdentity": session.source_identity,
            "SessionTokenUtilization": issued.token_utilization,
            "SessionTokenSize": len(issued.token),
        }

    async def assume_root(call: Call) -> Result:
        p, caller = call.params, call.principal
        target = p["TargetPrincipal"]
        parsed = arn.parse(target)
        member = parsed.account if parsed is not None else target
        if not (member.isascii() and member.isdigit() and len(member) == 12) or \
                (parsed is not None and target != arn.root(member)):
            raise ValidationError("The TargetPrincipal must be a member account's id or its "
                                  "root user's ARN.")
        task = p["TaskPolicyArn"].get("arn")
        resource = arn.root(member)
        if caller.is_root:
            raise AccessDenied("You cannot use root user credentials to call AssumeRoot: use "
                               "an IAM user or role of the management account.")
        # Judged within the caller's account (no resource policy to ask), but on the member:
        # aws:ResourceAccount and its organization keys are the target's.
        theirs = await authz.governed(member)
        context: dict[str, str | list[str]] = {"sts:TaskPolicyArn": task or "",
                                               "aws:ResourceAccount": member}
        if theirs is not None:
            context.update(theirs.resource_keys())
        await allow(call, "sts:AssumeRoot", resource, context=context)
        mine = await authz.governed(caller.account_id)
        if mine is None or not mine.is_management or \
                "RootSessions" not in mine.root_features:
            raise AccessDenied(f"User: {caller.arn} is not authorized to perform: "
                               f"sts:AssumeRoot on resource: {resource}: root sessions of "
                               "centralized root access are not enabled for its organization")
        if theirs is None or theirs.org_id != mine.org_id or theirs.is_management:
            raise AccessDenied(f"User: {caller.arn} is not authorized to perform: "
                               f"sts:AssumeRoot on resource: {resource}: it is not a member "
                               "account of the caller's organization")
        if task in root_tasks.WITHOUT_MEANING:
            raise ValidationError(f"The task policy {task} has no meaning on this broker: "
                                  f"{root_tasks.WITHOUT_MEANING[task]}.")
        if task not in root_tasks.TASKS:
            raise ValidationError(
                f"Value '{task}' at 'taskPolicyArn.arn' failed to satisfy constraint: Member "
                f"must be one of AWS's root task policies ({root_tasks.PREFIX}...)")
        seconds = p.get("DurationSeconds") or root_tasks.DEFAULT_SECONDS
        issued = sts.root_task_session(caller, member, task, seconds=seconds)
        return {
            "Credentials": credentials(issued),
            "SourceIdentity": issued.session.source_identity,
            "SessionTokenUtilization": issued.token_utilization,
            "SessionTokenSize": len(issued.token),
        }

    async def get_access_key_info(call: Call) -> Result:
        await allow(call, "sts:GetAccessKeyInfo", "*")
        account = await sts.get_access_key_info(call.params["AccessKeyId"])
        return {"Account": account}

    async def decode_authorization_message(call: Call) -> Result:
        await allow(call, "sts:DecodeAuthorizationMessage", "*")
        decoded = authz.decode(call.params["EncodedMessage"], call.principal.account_id)
        if decoded is None:
            raise InvalidAuthorizationMessage(
                "The message was invalid, or was encoded for another account.")
        return {"DecodedMessage": decoded}

    return [
        Operation(STS, "GetCallerIdentity", model.GetCallerIdentityRequest,
                  get_caller_identity),
        Operation(STS, "GetSessionToken", model.GetSessionTokenRequest, get_session_token,
                  issued=_session),
        Operation(STS, "GetFederationToken", model.GetFederationTokenRequest,
                  get_federation_token, issued=_federated),
        Operation(STS, "AssumeRole", model.AssumeRoleRequest, assume_role, issued=_assumed),
        Operation(STS, "AssumeRoleWithSAML", model.AssumeRoleWithSAMLRequest,
                  assume_role_with_saml, signed=False, issued=_assumed),
        Operation(STS, "AssumeRoleWithWebIdentity", model.AssumeRoleWithWebIdentityRequest,
                  assume_role_with_web_identity, signed=False, issued=_assumed),
        Operation(STS, "AssumeRoot", model.AssumeRootRequest, assume_root, issued=_session),
        Operation(STS, "GetAccessKeyInfo", model.GetAccessKeyInfoRequest, get_access_key_info),
        Operation(STS, "DecodeAuthorizationMessage", model.DecodeAuthorizationMessageRequest,
                  decode_authorization_message),
    ]
