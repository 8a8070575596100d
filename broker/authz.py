"""Authorization of the broker's own IAM and STS actions.

Until IAM policies exist (the policy-engine issue), the only identity with permissions is the
account's root user, exactly as on a fresh AWS account: an IAM user has no identity-based policy,
so every action that needs one is refused with AWS's message. What session credentials may do
is limited as AWS limits it:

* no session credentials may call GetSessionToken or GetFederationToken;
* GetSessionToken credentials may not call IAM without multi-factor authentication, nor any
  STS action but AssumeRole and GetCallerIdentity;
* GetFederationToken credentials may call no IAM action and no STS action but GetCallerIdentity.

Actions AWS lets anyone with valid credentials call (sts:GetCallerIdentity, and
sts:GetSessionToken for long-term credentials) are not checked here.
"""

from __future__ import annotations

from broker.aws.errors import AccessDenied
from broker.principal import Principal, PrincipalType
from broker.sts.tokens import SessionKind

UNCHECKED = frozenset({"sts:GetCallerIdentity", "sts:GetSessionToken"})
NOT_WITH_SESSIONS = frozenset({"sts:GetSessionToken", "sts:GetFederationToken"})
# What credentials from GetSessionToken may call in STS (AssumeRole joins with roles).
SESSION_TOKEN_STS = frozenset({"sts:GetCallerIdentity"})


def authorize(caller: Principal, action: str, resource: str) -> None:
    """Return if ``caller`` may perform ``action`` on ``resource``; raise AccessDenied if not."""
    session = caller.session
    if session is not None and action in NOT_WITH_SESSIONS:
        raise AccessDenied(f"Cannot call {action.split(':', 1)[1]} with session credentials")
    if action in UNCHECKED:
        return
    service = action.split(":", 1)[0]
    if session is not None and session.kind is SessionKind.FEDERATED_USER:
        raise _denied(caller, action, resource, "")
    if session is not None and session.kind is SessionKind.SESSION_TOKEN:
        if service == "iam" and not session.mfa:
            raise _denied(
                caller, action, resource,
                " because session credentials from GetSessionToken cannot call IAM "
                "without multi-factor authentication",
            )
        if service == "sts" and action not in SESSION_TOKEN_STS:
            raise _denied(
                caller, action, resource,
                " because session credentials from GetSessionToken may call no STS action "
                "but AssumeRole and GetCallerIdentity",
            )
    if caller.type is PrincipalType.ACCOUNT:
        return
    raise _denied(
        caller, action, resource, f" because no identity-based policy allows the {action} action"
    )


def _denied(caller: Principal, action: str, resource: str, reason: str) -> AccessDenied:
    return AccessDenied(
        f"User: {caller.arn} is not authorized to perform: {action} on resource: {resource}"
        + reason
    )
