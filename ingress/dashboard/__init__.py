"""The live dashboard: one hand-written page (HTML, CSS, JS; no build step) on the ingress.

    GET /dashboard            the page
    GET /dashboard/app.js     its script
    GET /dashboard/app.css    its styles

The page signs in with a tenant API key (tenant view) or the admin token (operator
view), keeps it in ``sessionStorage`` and sends it only as ``Authorization: Bearer``; it
reads the REST routes and the live stream of :mod:`ingress.observe`. Everything is
served with a strict Content-Security-Policy (no inline script, same-origin only).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

__all__ = ["PATH", "setup"]

PATH = "/dashboard"
_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    package = resources.files(__name__)
    return {name: package.joinpath(name).read_bytes() for name in _FILES}


def setup(app: web.Application) -> None:
    """Serve the dashboard on ``app`` (read once, at setup)."""
    files = _load()

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def serve(request: web.Request) -> web.Response:
            return web.Response(
                body=files[name], content_type=_FILES[name], charset="utf-8", headers=_HEADERS
            )

        return serve

    app.router.add_get(PATH, handler("index.html"))
    app.router.add_get(f"{PATH}/", handler("index.html"))
    app.router.add_get(f"{PATH}/app.js", handler("app.js"))
    app.router.add_get(f"{PATH}/app.css", handler("app.css"))
