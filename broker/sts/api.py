"""STS actions of the Query protocol: input shapes (as in AWS's model) and result rendering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.authz import authorize
from broker.aws import arn
from broker.aws.errors import ValidationError
from broker.aws.query import STS, Call, Operation, Result
from broker.aws.shapes import Integer, ListOf, String, optional, required, struct
from broker.aws.tags import tagListType
from broker.sts.service import IssuedCredentials, StsService

# AWS's shape names, with the constraints of the STS service model.
XML_TEXT = r"[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\u10000-\u10FFFF]+"
arnType = String(min=20, max=2048, pattern=XML_TEXT)
durationSecondsType = Integer(min=900, max=129600)
serialNumberType = String(min=9, max=256, pattern=r"[\w+=/:,.@-]*")
tokenCodeType = String(min=6, max=6, pattern=r"[\d]*")
minimumSessionTokenSizeType = Integer(min=0, max=4096)
federatedUserNameType = String(min=2, max=32, pattern=r"[\w+=,.@-]*")
sessionPolicyDocumentType = String(
    min=1, max=2048, pattern=r"[\u0009\u000A\u000D\u0020-\u00FF]+"
)
accessKeyIdType = String(min=16, max=128, pattern=r"[\w]*")
PolicyDescriptorType = struct(optional("arn", arnType))
policyDescriptorListType = ListOf(PolicyDescriptorType)

MAX_POLICY_ARNS = 10

GetCallerIdentityRequest = struct()
GetSessionTokenRequest = struct(
    optional("DurationSeconds", durationSecondsType),
    optional("SerialNumber", serialNumberType),
    optional("TokenCode", tokenCodeType),
    optional("MinimumSessionTokenSize", minimumSessionTokenSizeType),
)
GetFederationTokenRequest = struct(
    required("Name", federatedUserNameType),
    optional("Policy", sessionPolicyDocumentType),
    optional("PolicyArns", policyDescriptorListType),
    optional("DurationSeconds", durationSecondsType),
    optional("Tags", tagListType),
    optional("MinimumSessionTokenSize", minimumSessionTokenSizeType),
)
GetAccessKeyInfoRequest = struct(required("AccessKeyId", accessKeyIdType))


def credentials(issued: IssuedCredentials) -> dict[str, Any]:
    return {
        "AccessKeyId": issued.session.access_key_id,
        "SecretAccessKey": issued.session.secret_access_key,
        "SessionToken": issued.token,
        "Expiration": issued.session.expiration,
    }


def _federated(result: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return result["Credentials"]["AccessKeyId"], result["FederatedUser"]["Arn"]


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


def tags(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((t["Key"], t["Value"]) for t in params.get("Tags", []))


def operations(sts: StsService) -> list[Operation]:
    async def get_caller_identity(call: Call) -> Result:
        caller = call.principal
        return {"UserId": caller.user_id, "Account": caller.account_id, "Arn": caller.arn}

    async def get_session_token(call: Call) -> Result:
        p = call.params
        authorize(call.principal, "sts:GetSessionToken", call.principal.arn)
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
        authorize(caller, "sts:GetFederationToken", federated_arn)
        if p.get("Tags"):
            authorize(caller, "sts:TagSession", federated_arn)
        issued = await sts.get_federation_token(
            call.principal,
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

    async def get_access_key_info(call: Call) -> Result:
        authorize(call.principal, "sts:GetAccessKeyInfo", "*")
        account = await sts.get_access_key_info(call.params["AccessKeyId"])
        return {"Account": account}

    return [
        Operation(STS, "GetCallerIdentity", GetCallerIdentityRequest, get_caller_identity),
        Operation(STS, "GetSessionToken", GetSessionTokenRequest, get_session_token,
                  issued=_session),
        Operation(STS, "GetFederationToken", GetFederationTokenRequest, get_federation_token,
                  issued=_federated),
        Operation(STS, "GetAccessKeyInfo", GetAccessKeyInfoRequest, get_access_key_info),
    ]
