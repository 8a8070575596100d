"""SCIM's errors (RFC 7644 §3.12): a status, a ``scimType`` for the 400s and 409s that have
one, and a ``detail`` a person can act on. Raising one is enough: ``web/scim.py`` renders it
as ``urn:ietf:params:scim:api:messages:2.0:Error`` with ``status`` as a string.

    ScimError
      ├── 400 invalidFilter, invalidSyntax, invalidValue, invalidPath, noTarget,
      │       mutability, tooMany, invalidVers
      ├── 401 (no scimType)   403   404   405   409 uniqueness   412   413   429
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status),
                               "detail": self.detail}
        if self.scim_type is not None:
            out["scimType"] = self.scim_type
        return out


def bad(scim_type: str, detail: str) -> ScimError:
    return ScimError(400, detail, scim_type)


def invalid_filter(detail: str) -> ScimError:
    return bad("invalidFilter", detail)


def invalid_value(detail: str) -> ScimError:
    return bad("invalidValue", detail)


def invalid_syntax(detail: str) -> ScimError:
    return bad("invalidSyntax", detail)


def invalid_path(detail: str) -> ScimError:
    return bad("invalidPath", detail)


def mutability(detail: str) -> ScimError:
    return bad("mutability", detail)


def no_target(detail: str) -> ScimError:
    return bad("noTarget", detail)


def not_found(detail: str) -> ScimError:
    return ScimError(404, detail)


def unauthorized(detail: str = "The bearer token is missing, expired, revoked or not "
                                "this identity store's.") -> ScimError:
    return ScimError(401, detail)


def uniqueness(detail: str) -> ScimError:
    return ScimError(409, detail, "uniqueness")


def precondition(detail: str) -> ScimError:
    return ScimError(412, detail)
