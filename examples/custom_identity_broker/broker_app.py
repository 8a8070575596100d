#!/usr/bin/env python3
"""A custom identity broker: it signs people in against a directory that speaks neither SAML
nor OpenID Connect (here, a local users file), gets them temporary credentials with its own
IAM user's keys, and hands them a console sign-in URL — AWS's "Enabling custom identity broker
access to the AWS console", against this broker.

    python broker_app.py hash-password                 # a password hash for users.json
    python broker_app.py sign-in --user alice          # prints the person's sign-in URL

The program's IAM user's keys come from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY), the broker's URL from --broker or BROKER_URL. Standard library, boto3
and httpx only: it talks to the broker as it would talk to AWS.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import boto3
import httpx
from botocore.exceptions import BotoCoreError, ClientError

USERS = Path(__file__).resolve().parent / "users.json"

# One message for an unknown user and a wrong password, so that the answer does not tell
# which names exist.
REFUSED = "Sign-in refused: unknown user or wrong password."

# scrypt with the cost RFC 7914 suggests for interactive logins (about 16 MiB, tens of
# milliseconds): cheap for one sign-in, expensive for someone testing a stolen users file.
N, R, P, SALT_BYTES, HASH_BYTES = 2**14, 8, 1, 16, 32
MAXMEM = 64 * 1024 * 1024

# Checked when the user is unknown, so that an unknown name costs the same scrypt as a known
# one (no timing difference to enumerate names by). No password hashes to all zeros.
NOBODY = "$".join(("scrypt", str(N), str(R), str(P),
                   base64.b64encode(bytes(SALT_BYTES)).decode(),
                   base64.b64encode(bytes(HASH_BYTES)).decode()))


@dataclass(frozen=True)
class Person:
    name: str
    password_hash: str
    role_arn: str | None = None  # AssumeRole with this role ...
    policy: dict[str, Any] | None = None  # ... or GetFederationToken with this session policy
    duration_seconds: int = 3600


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)  # per user: equal passwords get unequal hashes
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM,
                            dklen=HASH_BYTES)
    return "$".join(("scrypt", str(N), str(R), str(P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def verify_password(password: str, encoded: str) -> bool:
    scheme, n, r, p, salt, expected = encoded.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                            r=int(r), p=int(p), maxmem=MAXMEM, dklen=HASH_BYTES)
    # Constant time: how long the comparison takes says nothing about how much matched.
    return hmac.compare_digest(digest, base64.b64decode(expected))


def load_users(path: Path) -> dict[str, Person]:
    people: dict[str, Person] = {}
    for name, entry in json.loads(path.read_text(encoding="utf-8")).items():
        federated = entry.get("federated")
        if ("role_arn" in entry) == (federated is not None):
            raise SystemExit(f"{path}: {name} needs either role_arn or federated, not both")
        if federated is not None and not isinstance(federated.get("policy"), dict):
            # Without a session policy a federated user would get no permissions at all.
            raise SystemExit(f"{path}: {name} is federated, so needs federated.policy")
        people[name] = Person(
            name, entry["password"], role_arn=entry.get("role_arn"),
            policy=federated["policy"] if federated else None,
            duration_seconds=int(entry.get("duration_seconds", 3600)))
    return people


def authenticate(people: dict[str, Person], name: str, password: str) -> Person | None:
    person = people.get(name)
    matches = verify_password(password, person.password_hash if person else NOBODY)
    return person if person is not None and matches else None


def temporary_credentials(broker: str, person: Person) -> dict[str, str]:
    """The person's credentials, asked for with the program's own IAM user's keys (boto3
    reads them from the environment). The person never sees those keys."""
    sts = boto3.client("sts", endpoint_url=broker,
                       region_name=os.environ.get("AWS_REGION", "us-east-1"))
    if person.role_arn is not None:
        result = sts.assume_role(RoleArn=person.role_arn, RoleSessionName=person.name,
                                 DurationSeconds=person.duration_seconds)
    else:
        # The federated user's permissions are the intersection of this policy and the
        # program's own: the policy narrows them to what this person may do.
        result = sts.get_federation_token(Name=person.name,
                                          Policy=json.dumps(person.policy),
                                          DurationSeconds=person.duration_seconds)
    credentials: dict[str, str] = result["Credentials"]
    return credentials


def signin_token(broker: str, credentials: dict[str, str],
                 session_duration: int | None) -> str:
    session = json.dumps({"sessionId": credentials["AccessKeyId"],
                          "sessionKey": credentials["SecretAccessKey"],
                          "sessionToken": credentials["SessionToken"]})
    params = {"Action": "getSigninToken", "Session": session}
    if session_duration is not None:  # role sessions only, as at AWS
        params["SessionDuration"] = str(session_duration)
    response = httpx.get(f"{broker}/federation", params=params, timeout=30)
    if response.status_code != 200:
        error = response.json().get("Error", {})
        raise SystemExit(f"The broker refused the sign-in token: {error.get('Code')}: "
                         f"{error.get('Message')}")
    token: str = response.json()["SigninToken"]
    return token


def login_url(broker: str, token: str, destination: str | None, issuer: str | None) -> str:
    params = {"Action": "login", "Destination": destination or f"{broker}/console"}
    if issuer is not None:
        # The broker links back to the Issuer, so it must be one of its allowed destinations
        # (setting signin.destinations): otherwise the login is refused.
        params["Issuer"] = issuer
    params["SigninToken"] = token
    return f"{broker}/federation?{urlencode(params)}"


def broker_url(value: str | None) -> str:
    url = (value or os.environ.get("BROKER_URL") or "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit("Say where the broker is: --broker URL or BROKER_URL.")
    # The credentials travel in getSigninToken's query string: only over TLS, except to a
    # broker on this machine.
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise SystemExit("The broker's URL must be https (credentials travel to it).")
    return url


def read_password(from_stdin: bool, prompt: str = "Password: ") -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)  # never on the command line, where `ps` would show it


def sign_in(args: argparse.Namespace) -> int:
    people = load_users(args.users)
    password = read_password(args.password_stdin)
    person = authenticate(people, args.user, password)
    if person is None:
        print(REFUSED, file=sys.stderr)
        return 1  # the broker is not called: nothing to audit, nothing to leak
    broker = broker_url(args.broker)
    try:
        credentials = temporary_credentials(broker, person)
    except (ClientError, BotoCoreError) as exc:
        print(f"The broker refused the credentials: {exc}", file=sys.stderr)
        return 2
    duration = args.session_duration if person.role_arn is not None else None
    token = signin_token(broker, credentials, duration)
    # The URL is a bearer credential for 15 minutes and one use: give it to the person only.
    print(login_url(broker, token, args.destination, args.issuer))
    return 0


def hash_command(args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin, "New password: ")
    if not args.password_stdin and password != getpass.getpass("Again: "):
        print("The passwords differ.", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A custom identity broker (see README.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    hasher = commands.add_parser("hash-password", help="print a password hash for users.json")
    hasher.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input")
    hasher.set_defaults(run=hash_command)
    signer = commands.add_parser("sign-in", help="authenticate a person, print a sign-in URL")
    signer.add_argument("--user", required=True)
    signer.add_argument("--users", type=Path, default=USERS, help="the users file")
    signer.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input")
    signer.add_argument("--broker", help="the broker's URL (default: $BROKER_URL)")
    signer.add_argument("--destination", help="where to land (default: the broker's console)")
    signer.add_argument("--issuer", help="a link back to this program's sign-in page; the "
                                         "broker's administrator must allow it")
    signer.add_argument("--session-duration", type=int,
                        help="console session seconds (900-43200), for role users only")
    signer.set_defaults(run=sign_in)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
