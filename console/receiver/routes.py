"""The webhook route table: each provider's routes (from its spec) to one handler, and `/healthz`.

What happens to a request is the pipeline's business (console/services/pipeline.py):
the receiver only knows which route a request came in on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from console import __version__
from console.core.http_types import Request, Response
from console.providers import registry
from console.receiver.http import Router

# (route name, the request) -> the answer; the route name is "<provider>" or "<provider>.<what>".
RouteHandler = Callable[[str, Request], Awaitable[Response]]


def build_router(
    handle: RouteHandler,
    providers: Collection[str],
    *,
    extra: Callable[[Router], None] | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
) -> Router:
    """Every route of every provider in `providers`, handled by `handle`; `extra` adds more (streams,
    control); `health` adds to what `/healthz` says (figures only: it is public)."""
    router = Router()
    started = time.monotonic()
    for spec in registry.specs():
        if spec.name not in providers:
            continue
        for route in spec.routes:
            for method in route.methods:
                router.add(method, route.path, _route_handler(handle, route.name))

    async def healthz(request: Request) -> Response:
        return Response.json(
            200,
            {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(time.monotonic() - started, 1),
                "providers": sorted(providers),
                **(health() if health is not None else {}),
            },
        )

    router.add("GET", "/healthz", healthz)
    if extra is not None:
        extra(router)
    return router


def _route_handler(handle: RouteHandler, route: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        return await handle(route, request)

    return handler
