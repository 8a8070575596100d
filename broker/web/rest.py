"""The rest-json endpoints (``sso`` and ``sso-oidc``) on the one public URL: a plain ASGI app,
as the Query endpoint is (broker/web/query.py), that BrokerApp routes each of their paths to
whatever the method, so that a wrong method is the service's own error, never Starlette's
404 or 405 page.

The paths come from the generated models (``HTTP``), so that routing and the protocol cannot
disagree about them.
"""

from __future__ import annotations

import logging

from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from broker.aws.errors import AwsError
from broker.aws.ids import new_request_id
from broker.aws.restjson import RestProtocol, error_response, internal_error
from broker.identitycenter import oidc_model, portal_model
from broker.identitycenter.oidc_api import SSO_OIDC
from broker.identitycenter.portal_api import SSO
from broker.web.query import Disconnected, _body, _http_request, _send

log = logging.getLogger("broker.rest")

PATHS = frozenset(path for model in (portal_model, oidc_model)
                  for _, path, _ in model.HTTP.values())


class RestApp:
    def __init__(self, state: State) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol: RestProtocol = self._state.runtime.rest_protocol
        service = protocol.service_of(scope["path"]) or \
            (SSO if scope["path"] in _SSO_PATHS else SSO_OIDC)
        try:
            try:
                body = await _body(scope, receive,
                                   self._state.runtime.settings.server.max_body_bytes)
                http = _http_request(scope, body)
            except Disconnected:
                return
            except AwsError as exc:
                reply = error_response(exc, service, new_request_id())
                await _send(send, reply.status, reply.body, reply.headers)
                return
            client = scope.get("client")
            reply = await protocol.handle(http, source_ip=client[0] if client else None,
                                          secure=scope["scheme"] == "https", service=service)
        except Exception:
            request_id = new_request_id()
            log.exception("request %s: unexpected failure in the rest-json endpoint",
                          request_id)
            reply = error_response(internal_error(service, request_id), service, request_id)
        await _send(send, reply.status, reply.body, reply.headers)


_SSO_PATHS = frozenset(path for _, path, _ in portal_model.HTTP.values())
