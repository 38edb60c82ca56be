"""The web pages' building blocks: signed cookies, CSRF tokens, where a sign-in may send the browser next,
and escaping in the pages."""

from __future__ import annotations

import time

import pytest
from starlette.requests import cookie_parser

from manifold.web import csrf, pages
from manifold.web.session import SessionCookies, Signer
from manifold.web.sign_in import safe_next

KEY = b"k" * 32
OLD_KEY = b"o" * 32


def test_a_sealed_value_opens_only_unaltered_and_for_its_purpose() -> None:
    signer = Signer([KEY])
    sealed = signer.seal("session", {"p": "user:alice"})
    assert signer.unseal("session", sealed) == {"p": "user:alice"}
    assert signer.unseal("pre-login", sealed) is None  # sealed for another purpose
    body, mac = sealed.split(".")
    forged_body = Signer([KEY]).seal("session", {"p": "user:mallory"}).split(".")[0]
    assert signer.unseal("session", f"{forged_body}.{mac}") is None
    assert signer.unseal("session", body) is None
    assert Signer([b"x" * 32]).unseal("session", sealed) is None  # another gateway's key


def test_values_sealed_before_a_key_rotation_still_open() -> None:
    sealed = Signer([OLD_KEY]).seal("session", {"p": "user:alice"})
    rotated = Signer([KEY, OLD_KEY])
    assert rotated.unseal("session", sealed) == {"p": "user:alice"}
    assert rotated.seal("session", {"p": "x"}) == Signer([KEY]).seal("session", {"p": "x"})  # newest signs


def test_a_session_cookie_reads_back_until_it_expires() -> None:
    cookies = SessionCookies([KEY], secure=False)
    header = cookies.new_session("user:alice@corp.com", "alice@corp.com", "api_key:k1")
    name, _, rest = header.partition("=")
    value = rest.split(";", 1)[0]
    assert name == "manifold-session"
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= {p.strip() for p in header.split(";")}
    assert "Secure" not in header
    session = cookies.session(cookie_parser(f"other=1; {name}={value}"))
    assert session is not None and session.principal_id == "user:alice@corp.com" and session.method == "api_key:k1"
    assert cookies.session({name: value}, now=time.time() + 9 * 3600) is None


def test_on_https_the_cookies_are_secure_and_host_only() -> None:
    cookies = SessionCookies([KEY], secure=True)
    header = cookies.new_session("user:a", "a", "idp:corp")
    assert header.startswith("__Host-manifold-session=") and "; Secure" in header
    _, pre = cookies.new_pre_login()
    assert pre.startswith("__Host-manifold-login=") and "; Secure" in pre


def test_form_tokens_are_bound_to_the_session_and_the_action() -> None:
    signer = Signer([KEY])
    token = csrf.token(signer, "sid-1", "consent:github")
    assert csrf.valid(signer, "sid-1", "consent:github", token)
    assert not csrf.valid(signer, "sid-2", "consent:github", token)  # another session
    assert not csrf.valid(signer, "sid-1", "consent:jira", token)  # another button
    assert not csrf.valid(signer, "sid-1", "consent:github", None)
    assert not csrf.valid(signer, "sid-1", "consent:github", "")


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),  # not from a browser page
        ({"origin": "http://127.0.0.1:8470"}, False),
        ({"origin": "http://127.0.0.1:8470", "sec-fetch-site": "same-origin"}, False),
        ({"origin": "http://evil.example"}, True),
        ({"origin": "http://127.0.0.1:9999"}, True),  # another port is another origin
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site"}, True),
    ],
)
def test_cross_site_posts_are_recognised(headers: dict[str, str], refused: bool) -> None:
    assert (csrf.cross_site(headers, "http://127.0.0.1:8470") is not None) is refused


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/connect/github?t=abc", "/connect/github?t=abc"),
        ("/connections", "/connections"),
        (None, "/servers"),
        ("", "/servers"),
        ("https://evil.example/", "/servers"),
        ("//evil.example/x", "/servers"),
        ("/\\evil.example", "/servers"),
        ("javascript:alert(1)", "/servers"),
        ("/ok\r\nSet-Cookie: x=1", "/servers"),
    ],
)
def test_after_sign_in_the_browser_stays_on_the_gateway(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected


def test_pages_escape_what_they_show() -> None:
    viewer = pages.Viewer('<b>"alice"</b>', "tok")
    body = pages.consent(
        viewer=viewer,
        upstream_id="<script>x</script>",
        principal_id="user:<img>",
        authorization_server="https://as.example/",
        upstream_url="https://up.example/mcp",
        scopes=["a&b"],
        link='t"><script>',
        csrf="c",
    )
    assert "<script>" not in body and "<img>" not in body and "<b>" not in body
    assert "&lt;script&gt;" in body and "a&amp;b" in body and "t&quot;&gt;&lt;script&gt;" in body
