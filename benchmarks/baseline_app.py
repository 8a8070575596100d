"""The benchmark's baseline: a bare Starlette form-POST endpoint answering a similar XML body.

Run by benchmarks/caller_identity.py with the same uvicorn options as the broker.
"""

from __future__ import annotations

import sys
import uuid
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.app import server_options
from broker.settings import load

BODY = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<GetCallerIdentityResult><UserId>{user}</UserId><Account>{account}</Account>"
    "<Arn>arn:aws:iam::{account}:root</Arn></GetCallerIdentityResult>"
    "<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>"
    "</GetCallerIdentityResponse>"
)


async def endpoint(request: Request) -> Response:
    if request.method == "GET":
        return Response("ok")
    form = dict(parse_qsl((await request.body()).decode()))
    rid = str(uuid.uuid4())
    body = BODY.format(user="123456789012", account="123456789012", rid=rid)
    return Response(body.encode() if form.get("Action") else b"", 200,
                    {"x-amzn-RequestId": rid, "content-type": "text/xml"})


app = Starlette(routes=[Route("/", endpoint, methods=["GET", "POST"])])

if __name__ == "__main__":
    options = server_options(load(None, environ={}))
    options["port"] = int(sys.argv[1])
    uvicorn.run(app, **options)
