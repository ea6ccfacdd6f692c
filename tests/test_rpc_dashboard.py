"""The dashboard's server side through a real Hypercorn server: its page and assets need
no token and carry a strict policy; its session cookie stands in for the token only from
the peer's own origin (the browser itself: tests/test_dashboard.py)."""

from __future__ import annotations

from typing import Any

import httpx

from aitbc_p2p.rpc.ui import ASSETS, SESSION_COOKIE, session_value
from conftest import RPC_TOKEN


async def test_the_page_and_its_assets_are_served_without_a_token_and_without_outside_resources(rpc_server: Any):
    _node, url = rpc_server
    async with httpx.AsyncClient(base_url=url) as anon:
        assert (await anon.get("/ui")).headers["location"] == "/ui/"
        for name, kind in ASSETS.items():
            page = await anon.get("/ui/" if name == "index.html" else f"/ui/{name}")
            assert page.status_code == 200 and page.headers["content-type"] == kind, name
            policy = page.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
            assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
            outside = page.content.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")  # a name, not a fetch
            assert b"http://" not in outside and b"https://" not in outside and b"//cdn" not in outside, name
        assert (await anon.get("/ui/secret.txt")).status_code == 401  # only the page's own files are public
        bearer = {"Authorization": f"Bearer {RPC_TOKEN}"}
        assert (await anon.get("/ui/../rpc.token", headers=bearer)).status_code == 404
        assert (await anon.get("/ui/secret.txt", headers=bearer)).status_code == 404
        assert (await anon.get("/ui/session")).json() == {"signed_in": False}
        assert (await anon.get("/v1/status")).status_code == 401
        assert "access-control-allow-origin" not in (await anon.get("/ui/")).headers  # no CORS


async def test_a_sign_in_exchanges_the_token_for_a_strict_cookie_that_only_the_peers_own_pages_may_use(
    rpc_server: Any,
):
    _node, url = rpc_server
    async with httpx.AsyncClient(base_url=url) as http:
        wrong = await http.post("/ui/session", data={"token": "nope"})
        assert wrong.status_code == 303 and wrong.headers["location"].endswith("error=token")
        assert SESSION_COOKIE not in http.cookies
        assert (await http.post("/ui/session", data={})).status_code == 303
        login = await http.post("/ui/session", data={"token": RPC_TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/ui/"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}={session_value(RPC_TOKEN)};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert (await http.get("/ui/session")).json() == {"signed_in": True}
        assert (await http.get("/v1/status")).status_code == 200
        assert (
            await http.get("/v1/status", headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
        ).status_code == 200
        other_port = url.rsplit(":", 1)[0] + ":1"  # the same site to a browser, another origin
        for headers in ({"Origin": other_port}, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = await http.get("/v1/status", headers=headers)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN_ORIGIN", headers
        # A change with the cookie must name its origin (browsers do); with it, it is served.
        no_origin = await http.post("/v1/jobs/" + "ab" * 32 + "/cancel")
        assert no_origin.status_code == 403 and no_origin.json()["error"]["code"] == "FORBIDDEN_ORIGIN"
        served = await http.post("/v1/jobs/" + "ab" * 32 + "/cancel", headers={"Origin": url})
        assert served.status_code == 404  # past the guard: this peer tracks no such job
        # A bearer header is judged alone: a wrong one is refused even beside a good cookie.
        wrong_bearer = await http.get("/v1/status", headers={"Authorization": "Bearer nope"})
        assert wrong_bearer.status_code == 401
        out = await http.post("/ui/logout", headers={"Origin": url})
        assert out.status_code == 303 and SESSION_COOKIE not in http.cookies
        assert (await http.get("/v1/status")).status_code == 401
    async with httpx.AsyncClient(base_url=url, cookies={SESSION_COOKIE: "0" * 64}) as forged:
        assert (await forged.get("/v1/status")).status_code == 401
