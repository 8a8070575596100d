"""Who is calling: the principal an authenticated request speaks for."""

from __future__ import annotations

from enum import StrEnum

from broker.frozen import frozen
from broker.sts.tokens import Session, SessionKind


class PrincipalType(StrEnum):
    """The values of aws:PrincipalType."""

    ACCOUNT = "Account"  # the root user
    USER = "User"
    ASSUMED_ROLE = "AssumedRole"
    FEDERATED_USER = "FederatedUser"


@frozen
class Principal:
    type: PrincipalType
    account_id: str
    arn: str  # GetCallerIdentity's Arn
    user_id: str  # GetCallerIdentity's UserId
    name: str  # the user name, "root", the federated name or the role session name
    access_key_id: str  # the key that signed this request
    session: Session | None = None  # set when the credentials are temporary

    @property
    def is_root(self) -> bool:
        return self.type is PrincipalType.ACCOUNT

    @property
    def temporary(self) -> bool:
        return self.session is not None

    @classmethod
    def of_session(cls, session: Session) -> Principal:
        kind = _SESSION_TYPES.get(session.kind)
        if kind is None:  # GetSessionToken: the root user or an IAM user, as itself
            kind = PrincipalType.ACCOUNT if session.arn.endswith(":root") else PrincipalType.USER
        return cls(
            type=kind,
            account_id=session.account_id,
            arn=session.arn,
            user_id=session.user_id,
            name=session.name,
            access_key_id=session.access_key_id,
            session=session,
        )


_SESSION_TYPES = {
    SessionKind.FEDERATED_USER: PrincipalType.FEDERATED_USER,
    SessionKind.ASSUMED_ROLE: PrincipalType.ASSUMED_ROLE,
}
