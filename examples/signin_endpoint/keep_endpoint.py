"""Keep boto3's ``signin`` client on the broker's endpoint for every operation.

botocore's endpoint rules for AWS Sign-In send the session operations (ListSessions,
GetSession, BatchRevokeSessions: the rules' "control plane") to AWS's regional host,
``https://signin.REGION.api.aws``, whatever ``endpoint_url`` or ``AWS_ENDPOINT_URL_SIGNIN``
says; only the OAuth call (``/v1/token``) follows ``endpoint_url``. That rule needs a region,
and botocore lets a handler of ``before-endpoint-resolution.signin`` change the values the
rules are evaluated with: with the region cleared when an endpoint is configured, the rules
fall through to the configured endpoint. The request is still signed for the client's region.
Without a configured endpoint nothing changes, so the same program still reaches AWS.

    import boto3
    from keep_endpoint import keep_broker_endpoint

    session = boto3.Session(region_name="us-east-1")
    session.events.register("before-endpoint-resolution.signin", keep_broker_endpoint)
    signin = session.client("signin", endpoint_url="https://broker.example.com")

No botocore code is patched: this is botocore's documented event system.
"""

from __future__ import annotations

from typing import Any


def keep_broker_endpoint(builtins: dict[str, Any], **kwargs: Any) -> None:
    """``before-endpoint-resolution.signin``: with an endpoint configured, resolve to it."""
    if builtins.get("SDK::Endpoint"):
        builtins["AWS::Region"] = None
