"""Relaying an answer that is streamed (a user's export) as it arrives: never held whole in the gateway."""

import httpx
import structlog
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from kernel import signing
from kernel.errors import Unavailable
from kernel.web import Resources

log = structlog.get_logger(__name__)
PASSED_HEADERS = ("content-type", "content-disposition", "retry-after")


async def relay_stream(request: Request, url: str, workspace_id: str, headers: dict[str, str]) -> Response:
    """GET `url` signed for this workspace and relay the answer chunk by chunk; an error answer (small) whole."""
    res: Resources = request.app.state.resources
    assert res.http is not None
    auth = signing.GatewayAuth(request.app.state.signer, workspace_id)
    try:
        upstream = await res.http.send(res.http.build_request("GET", url, headers=headers), auth=auth, stream=True)
    except httpx.TransportError as exc:  # timeouts included: a GET has nothing to take effect
        log.warning("upstream_unreachable", upstream=httpx.URL(url).netloc.decode(), error_type=type(exc).__name__)
        raise Unavailable(f"an internal service is unreachable ({type(exc).__name__})") from exc
    passed = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}
    if upstream.status_code != 200:
        try:
            body = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(body, status_code=upstream.status_code, headers=passed)
    return StreamingResponse(upstream.aiter_bytes(), headers=passed, background=BackgroundTask(upstream.aclose))
