"""IAM Identity Center's OIDC actions (``sso-oidc``: rest-json, unsigned) — RegisterClient,
StartDeviceAuthorization, CreateToken — over broker/identitycenter/oauth.py.

Errors carry OAuth's fields, as AWS's do: ``error`` (RFC 6749 §5.2's code) and
``error_description``; the code travels in ``x-amzn-ErrorType``; the status is the one the
model gives the error shape (401 for InvalidClientException, 500 for InternalServerException,
400 for the rest).
"""

from __future__ import annotations

from typing import Any

from broker.aws.query import Call, Result
from broker.aws.restjson import RestError, RestOperation, RestRegistry, RestService
from broker.identitycenter import oidc_model
from broker.identitycenter.oauth import OAuth

# Error shape → (HTTP status from the model, OAuth's error code).
ERRORS: dict[str, tuple[int, str]] = {
    "InvalidRequestException": (400, "invalid_request"),
    "InvalidClientException": (401, "invalid_client"),
    "InvalidGrantException": (400, "invalid_grant"),
    "UnauthorizedClientException": (400, "unauthorized_client"),
    "UnsupportedGrantTypeException": (400, "unsupported_grant_type"),
    "InvalidScopeException": (400, "invalid_scope"),
    "AuthorizationPendingException": (400, "authorization_pending"),
    "SlowDownException": (400, "slow_down"),
    "AccessDeniedException": (400, "access_denied"),
    "ExpiredTokenException": (400, "expired_token"),
    "InternalServerException": (500, "server_error"),
    "InvalidClientMetadataException": (400, "invalid_client_metadata"),
    "InvalidRedirectUriException": (400, "invalid_redirect_uri"),
}


def _body(error: RestError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": ERRORS.get(error.code, (400, "invalid_request"))[1],
                            "error_description": error.message}
    if error.reason is not None:
        body["reason"] = error.reason
    return body


SSO_OIDC = RestService("sso-oidc", {code: status for code, (status, _) in ERRORS.items()},
                       _body)


def operations(oauth: OAuth) -> list[RestOperation]:
    registry = RestRegistry(SSO_OIDC, oidc_model)
    action = registry.action

    @action("RegisterClient")
    async def register_client(call: Call) -> Result:
        p = call.params
        if p.get("entitledApplicationArn") is not None:
            raise RestError("InvalidRequestException",
                            "entitledApplicationArn: this broker has no applications.")
        made = await oauth.register(
            name=p["clientName"], client_type=p["clientType"], scopes=p.get("scopes", []),
            redirect_uris=p.get("redirectUris", []), grant_types=p.get("grantTypes"),
            issuer_url=p.get("issuerUrl"))
        return {"clientId": made.client.client_id, "clientSecret": made.secret,
                "clientIdIssuedAt": made.client.issued_at,
                "clientSecretExpiresAt": made.client.expires_at,
                "authorizationEndpoint": made.authorization_endpoint,
                "tokenEndpoint": made.token_endpoint}

    @action("StartDeviceAuthorization")
    async def start_device_authorization(call: Call) -> Result:
        p = call.params
        started = await oauth.start_device(p["clientId"], p["clientSecret"], p["startUrl"],
                                           source_ip=call.source_ip)
        return {"deviceCode": started.device_code, "userCode": started.user_code,
                "verificationUri": started.verification_uri,
                "verificationUriComplete": started.verification_uri_complete,
                "expiresIn": started.expires_in, "interval": started.interval}

    @action("CreateToken")
    async def create_token(call: Call) -> Result:
        p = call.params
        tokens = await oauth.create_token(
            client_id=p["clientId"], client_secret=p["clientSecret"],
            grant_type=p["grantType"], device_code=p.get("deviceCode"), code=p.get("code"),
            refresh_token=p.get("refreshToken"), scopes=p.get("scope", []),
            redirect_uri=p.get("redirectUri"), code_verifier=p.get("codeVerifier"))
        return {"accessToken": tokens.access_token, "tokenType": "Bearer",
                "expiresIn": tokens.expires_in, "refreshToken": tokens.refresh_token}

    return registry.operations
