"""How hub's API routes read a JSON body: as RFC 8259 has JSON (hub.adapters.http.parse_json). Python's own parser,
which FastAPI and Starlette use, takes NaN, Infinity and -Infinity and reads 1e400 as infinity: in a field hub keeps
as the client sent it (a document list's entry, an extension of the contract) such a value was stored and relayed
to the portal as null, and the client was told 202. Now it is a 400 `malformed_json`, as any body that is not JSON."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from hub.adapters.http import parse_json


class JsonRequest(Request):
    """A request whose `json()` is RFC 8259's JSON."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """An API route whose handler (FastAPI's body parsing, and an endpoint that reads the body itself) gets a
    JsonRequest. FastAPI answers its json.JSONDecodeError as a body that is not JSON, its other errors as 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return strict
