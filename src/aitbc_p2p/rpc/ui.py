"""The web dashboard the peer serves at ``/ui/`` (specs/rpc.md, "Dashboard").

Three static files (``ui/index.html``, ``ui/app.js``, ``ui/style.css``) read the same
RPC as every other client; nothing is fetched from outside the peer and nothing is built.
The page cannot send the bearer header itself without keeping the token in script, so
the token is exchanged once, through a form, for an HttpOnly, SameSite=Strict session
cookie that the RPC accepts in its place. The cookie's value is derived from the token
(an HMAC), so it holds nothing the server must store and dies with the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from importlib.resources import files

from quart import Quart, Response, redirect, request

SESSION_COOKIE = "aitbc_session"
SESSION_LABEL = b"aitbc-ui-session/1"
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",  # an sd_infer image is shown from a blob of its bytes
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: with it, a form's Origin is "null"
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PUBLIC_PATHS = frozenset({"/ui", "/ui/", "/ui/session", "/ui/logout", *(f"/ui/{name}" for name in ASSETS)})
"""Paths served without a token: the page and its assets hold no data, and the login
form is how the token arrives."""


def session_value(token: str) -> str:
    """The session cookie's value for ``token``."""
    return hmac.new(token.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()


def has_session(token: str) -> bool:
    """Whether the request carries the session cookie for ``token``."""
    given = request.cookies.get(SESSION_COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode(), session_value(token).encode())


def cookie_refusal() -> str | None:
    """Why this request may not use the session cookie, or None if it may.

    SameSite=Strict keeps other sites from sending the cookie, but every port of
    127.0.0.1 is one site: a page served by another local program would send it too. So
    the cookie counts only from this peer's own origin (scheme, host and port), and a
    change (any method but GET and HEAD) must say where it came from, as browsers do."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"a {fetch_site[:20]} request may not use the session cookie"
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.headers.get('Host', '')}"
    if origin is not None and origin.lower() != own.lower():
        return f"the session cookie is for pages of {own} only, not {origin[:100]!r}"
    if origin is None and request.method not in ("GET", "HEAD"):
        return "a change made with the session cookie must carry Origin"
    return None


def _asset(name: str) -> bytes:
    return (files("aitbc_p2p.rpc") / "ui" / name).read_bytes()


def install(app: Quart, *, token: str) -> None:
    """Add the dashboard's routes to the RPC ``app`` guarded by ``token``."""
    assets = {name: _asset(name) for name in ASSETS}  # read once: they ship with the package

    def page(name: str, status: int = 200) -> Response:
        response = Response(assets[name], status=status, content_type=ASSETS[name])
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.after_request
    async def protect(response: Response) -> Response:
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    @app.get("/ui")
    async def ui_root() -> Response:
        return redirect("/ui/", 308)  # type: ignore[return-value]

    @app.get("/ui/")
    async def ui_index() -> Response:
        return page("index.html")

    @app.get("/ui/<name>")
    async def ui_asset(name: str) -> Response:
        if name not in assets or name == "index.html":
            return Response("not found", status=404, content_type="text/plain")
        return page(name)

    @app.get("/ui/session")
    async def ui_session() -> Response:
        """Whether this browser is signed in (200 either way: the page asks before it
        reads anything, so a signed-out page logs no error)."""
        signed_in = has_session(token) and cookie_refusal() is None
        return Response(json.dumps({"signed_in": signed_in}), content_type="application/json")

    @app.post("/ui/session")
    async def ui_login() -> Response:
        form = await request.form
        given = form.get("token", "").strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            response = redirect("/ui/#/login?error=token", 303)
            response.headers["Connection"] = "close"
            return response  # type: ignore[return-value]
        response = redirect("/ui/", 303)
        response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="Strict", path="/")
        return response  # type: ignore[return-value]

    @app.post("/ui/logout")
    async def ui_logout() -> Response:
        response = redirect("/ui/#/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
        return response  # type: ignore[return-value]
