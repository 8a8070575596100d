"""``broker login``: IAM Identity Center sign-in for the AWS CLI and SDKs, as ``aws sso login``
does it (the AWS CLI v1 on PyPI has none).

It is a client of the broker like any other — it speaks to the broker's ``sso-oidc`` and
``sso`` APIs over HTTP exactly as botocore's clients send them (rest-json; httpx, which the
broker depends on already, rather than boto3, which it does not), never to the broker's
internals:

1. RegisterClient (a public client, device-code and refresh-token grants);
2. StartDeviceAuthorization for the start URL; the verification URL and the user code are
   printed (and the browser opened unless ``--no-browser``);
3. CreateToken polled at the interval the broker asks for, until the person approves (or
   denies, or the code expires);
4. the token written to botocore's SSO cache (``~/.aws/sso/cache/SHA1(session).json``, the
   fields botocore's SSOTokenProvider reads and refreshes), and the profile and its
   ``sso-session`` section written to ``~/.aws/config`` with the broker's endpoint, so that
   ``aws --profile NAME …`` and ``boto3.Session(profile_name=NAME)`` need no key anywhere.

With ``--account-id`` and ``--role-name`` the profile names that role; without, the role is
chosen from what the person is assigned (the only one, or the first of ListAccounts /
ListAccountRoles, which are printed).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

SCOPES = ["sso:account:access"]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class LoginFailed(Exception):
    """The sign-in did not complete: denied, expired, or the broker refused."""


@dataclass(frozen=True)
class LoginResult:
    profile: str
    account_id: str
    role_name: str
    cache_file: Path
    config_file: Path


def endpoint_of(start_url: str) -> str:
    """The broker's endpoint, from an instance's start URL (``PUBLIC_URL/start/d-…``)."""
    parts = urlsplit(start_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LoginFailed(f"{start_url} is not a start URL (PUBLIC_URL/start/d-...).")
    path = parts.path.rstrip("/")
    base = path.rsplit("/start", 1)[0] if "/start" in path else ""
    return f"{parts.scheme}://{parts.netloc}{base}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def login(start_url: str, profile: str, *, account_id: str | None = None,
          role_name: str | None = None, region: str = "us-east-1",
          endpoint_url: str | None = None, open_browser: bool = True,
          home: Path | None = None, say: Callable[[str], None] = print,
          sleep: Callable[[float], None] = time.sleep) -> LoginResult:
    endpoint = (endpoint_url or endpoint_of(start_url)).rstrip("/")
    with httpx.Client(base_url=endpoint, timeout=30) as http:
        return _login(http, start_url, profile, account_id=account_id, role_name=role_name,
                      region=region, endpoint=endpoint, open_browser=open_browser, home=home,
                      say=say, sleep=sleep)


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _call(http: httpx.Client, method: str, path: str, *, body: dict[str, Any] | None = None,
          params: dict[str, str] | None = None, token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["x-amz-sso_bearer_token"] = token
    try:
        response = http.request(method, path, json=body, params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise LoginFailed(f"The broker at {http.base_url} cannot be reached: {exc}") from None
    try:
        answer: dict[str, Any] = response.json() if response.content else {}
    except ValueError:
        answer = {}
    if response.status_code != 200:
        code = (response.headers.get("x-amzn-errortype") or "").split(":")[0] or \
            str(answer.get("error") or response.status_code)
        raise _Refused(code, str(answer.get("error_description") or answer.get("message")
                                 or answer.get("Message") or ""))
    return answer


def _login(http: httpx.Client, start_url: str, profile: str, *, account_id: str | None,
           role_name: str | None, region: str, endpoint: str, open_browser: bool,
           home: Path | None, say: Callable[[str], None],
           sleep: Callable[[float], None]) -> LoginResult:
    try:
        client = _call(http, "POST", "/client/register", body={
            "clientName": f"broker-login-{profile}", "clientType": "public",
            "scopes": SCOPES})
        device = _call(http, "POST", "/device_authorization", body={
            "clientId": client["clientId"], "clientSecret": client["clientSecret"],
            "startUrl": start_url})
    except _Refused as exc:
        raise LoginFailed(f"The broker refused the sign-in: {exc}") from None
    complete = device.get("verificationUriComplete") or device["verificationUri"]
    say(f"Open {complete}\nand confirm the code {device['userCode']}.")
    if open_browser:
        webbrowser.open(complete)
    token = _poll(http, client, device, sleep)
    if account_id is None or role_name is None:
        account_id, role_name = _choose(http, token["accessToken"], account_id, role_name,
                                        say)
    now = datetime.now(UTC)
    home = home or Path(os.environ.get("HOME") or Path.home())
    cache_file = _write_cache(home, profile, {
        "startUrl": start_url, "region": region, "accessToken": token["accessToken"],
        "expiresAt": _iso(now + timedelta(seconds=token["expiresIn"])),
        "clientId": client["clientId"], "clientSecret": client["clientSecret"],
        "registrationExpiresAt": _iso(datetime.fromtimestamp(
            client["clientSecretExpiresAt"], UTC)),
        **({"refreshToken": token["refreshToken"]} if token.get("refreshToken") else {}),
    })
    config_file = _write_profile(home, profile, start_url=start_url, region=region,
                                 endpoint=endpoint, account_id=account_id,
                                 role_name=role_name)
    say(f"Signed in: profile {profile} is {role_name} in account {account_id}.")
    return LoginResult(profile, account_id, role_name, cache_file, config_file)


def _poll(http: httpx.Client, client: dict[str, Any], device: dict[str, Any],
          sleep: Callable[[float], None]) -> dict[str, Any]:
    interval = float(device.get("interval") or 5)
    deadline = time.monotonic() + float(device["expiresIn"])
    while time.monotonic() < deadline:
        sleep(interval)
        try:
            return _call(http, "POST", "/token", body={
                "clientId": client["clientId"], "clientSecret": client["clientSecret"],
                "grantType": DEVICE_GRANT, "deviceCode": device["deviceCode"]})
        except _Refused as exc:
            if exc.code == "AuthorizationPendingException":
                continue
            if exc.code == "SlowDownException":
                interval += 5  # RFC 8628, section 3.5
                continue
            raise LoginFailed(f"The sign-in did not complete: {exc}") from None
    raise LoginFailed("The code expired before it was confirmed.")


def _choose(http: httpx.Client, access_token: str, account_id: str | None,
            role_name: str | None, say: Callable[[str], None]) -> tuple[str, str]:
    try:
        accounts = [a["accountId"] for a in _call(
            http, "GET", "/assignment/accounts", token=access_token)["accountList"]]
        if account_id is not None:
            accounts = [a for a in accounts if a == account_id]
        return _first_role(http, access_token, accounts, role_name, say)
    except _Refused as exc:
        raise LoginFailed(f"The broker refused to list your roles: {exc}") from None


def _first_role(http: httpx.Client, access_token: str, accounts: list[str],
                role_name: str | None, say: Callable[[str], None]) -> tuple[str, str]:
    for account in accounts:
        roles = [r["roleName"] for r in _call(
            http, "GET", "/assignment/roles", token=access_token,
            params={"account_id": account})["roleList"]]
        say(f"Account {account}: {', '.join(roles) or '(no roles)'}")
        if role_name is not None:
            roles = [r for r in roles if r == role_name]
        if roles:
            return account, roles[0]
    raise LoginFailed("No role matches: you are not assigned one there.")


def cache_path(home: Path, session_name: str) -> Path:
    """botocore's SSO token cache file of an sso-session (its key: SHA-1 of the name)."""
    digest = hashlib.sha1(session_name.encode("utf-8")).hexdigest()  # noqa: S324
    return home / ".aws" / "sso" / "cache" / f"{digest}.json"


def _write_cache(home: Path, session_name: str, token: dict[str, Any]) -> Path:
    path = cache_path(home, session_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Only the user may read it, whatever an older file's mode was, and never through a
    # symbolic link someone else planted.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(token, out)
    return path


def _write_profile(home: Path, profile: str, *, start_url: str, region: str, endpoint: str,
                   account_id: str, role_name: str) -> Path:
    path = Path(os.environ.get("AWS_CONFIG_FILE") or home / ".aws" / "config")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    section = "default" if profile == "default" else f"profile {profile}"
    parser[section] = {
        "sso_session": profile, "sso_account_id": account_id, "sso_role_name": role_name,
        "region": region, "endpoint_url": endpoint}
    parser[f"sso-session {profile}"] = {
        "sso_start_url": start_url, "sso_region": region,
        "sso_registration_scopes": ",".join(SCOPES)}
    with path.open("w") as out:
        parser.write(out)
    return path
