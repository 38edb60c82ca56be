"""What a person types into the admin API must fit the database's columns: PostgreSQL refuses a value longer
than its VARCHAR (SQLite would store it), so an over-long id, name or email is a 400 naming the field on
both, never a 500. Runs on SQLite and, in `make test`'s second pass, on PostgreSQL (tests/postgres.py)."""

from __future__ import annotations

import pytest

from tests.e2e.harness import run_gateway

pytestmark = pytest.mark.anyio
API = "/admin/api"
LONG = "x" * 500


async def test_over_long_values_are_refused_with_the_field_named_and_nothing_is_stored() -> None:
    cases = [
        ("/users", {"id": f"{LONG}@corp.com"}, "'id' is longer than 320 characters"),
        ("/users", {"id": "ann@corp.com", "email": f"{LONG}@corp.com"}, "'email' is longer than 320 characters"),
        ("/teams", {"id": LONG}, "'id' is longer than 64 characters"),
        ("/service-accounts", {"id": LONG}, "'id' is longer than 64 characters"),
        ("/keys", {"user": "bob@corp.com", "name": LONG}, "'name' is longer than 200 characters"),
        ("/keys", {"user": f"{LONG}@corp.com", "name": "laptop"}, "'id' is longer than 320 characters"),
        ("/grants", {"who": f"user:{LONG}", "what": ["server:*"]}, "'who' is longer than 400 characters"),
    ]
    async with run_gateway({}) as gw, gw.http() as http:
        for path, body, said in cases:
            reply = await http.post(f"{gw.base}{API}{path}", json=body)
            assert reply.status_code == 400, (path, reply.status_code, reply.text)
            assert said in reply.text, (path, reply.text)

        upstream = {"id": "a" * 65, "transport": "http", "url": "http://127.0.0.1:9/mcp"}
        reply = await http.post(f"{gw.base}{API}/upstreams", json=upstream)
        assert reply.status_code == 400, reply.text
        assert "longer than 64 characters" in reply.text

        # Nothing half-written: no user, team, key or grant came of the refused requests, and the gateway
        # still takes values that fit.
        assert [u["id"] for u in (await http.get(f"{gw.base}{API}/users")).json()] == []
        assert (await http.get(f"{gw.base}{API}/teams")).json() == []
        fits = await http.post(f"{gw.base}{API}/users", json={"id": "x" * 311 + "@corp.com"})
        assert fits.status_code == 201, fits.text

        # A client registering with the gateway's authorization server: a redirect URI longer than an
        # authorization code's row holds is refused at registration, not at the first sign-in.
        client = {"redirect_uris": [f"https://ide.example/{LONG * 4}"], "token_endpoint_auth_method": "none"}
        reply = await http.post(f"{gw.base}/register", json=client)
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_redirect_uri", reply.text
        assert "Traceback" not in gw.log()
