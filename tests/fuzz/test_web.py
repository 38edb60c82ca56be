"""Fuzzing the browser pages: POST /login, /logout, /connect/..., /connections and the OAuth callback with
random fields, CSRF values (genuine, mangled, non-ASCII), cookies (genuine, mangled, made up), origins and
content types. Every answer is a page or a redirect, never a 5xx or a traceback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as fs
from tests.fuzz.probe import Probe

pytestmark = pytest.mark.anyio

TARGET = "web"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Browser:
    """Genuine cookies and form tokens to start mangling from: a pre-login form, and a signed-in session."""

    pre_login_cookie: str  # "name=value"
    login_csrf: str
    session_cookie: str
    logout_csrf: str

    def values(self, key: str) -> dict[str, str]:
        """What the markers of `forms` stand for."""
        return {
            "key": key,
            "login_csrf": self.login_csrf,
            "logout_csrf": self.logout_csrf,
            "pre_login": self.pre_login_cookie,
            "session": self.session_cookie,
            "pre_login_name": self.pre_login_cookie.split("=", 1)[0],
            "session_name": self.session_cookie.split("=", 1)[0],
        }


def _cookie(set_cookie: list[str], kind: str) -> str:
    for header in set_cookie:
        pair = header.split(";", 1)[0]
        if kind in pair.split("=", 1)[0] and pair.split("=", 1)[1]:
            return pair
    raise AssertionError(f"no {kind} cookie in {set_cookie}")


@pytest.fixture(scope="module")
async def browser(probe: Probe) -> Browser:
    form = await probe.send(TARGET, "GET", "/login", with_key=False)
    assert form.status == 200, form.text[:500]
    set_cookie = form.headers.getall("Set-Cookie", [])  # type: ignore[attr-defined]
    pre_login = set_cookie[0].split(";", 1)[0]
    login_csrf = CSRF_FIELD.search(form.text)
    assert login_csrf is not None, form.text[:1000]
    body = urlencode({"csrf": login_csrf.group(1), "key": probe.gw.key, "next": "/connections"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": pre_login}
    signed_in = await probe.send(TARGET, "POST", "/login", headers=headers, data=body, with_key=False)
    assert signed_in.status == 303, signed_in.text[:500]
    session = _cookie(signed_in.headers.getall("Set-Cookie", []), "session")  # type: ignore[attr-defined]
    page = await probe.send(TARGET, "GET", "/connections", headers={"Cookie": session}, with_key=False)
    logout_csrf = CSRF_FIELD.search(page.text)
    assert logout_csrf is not None, page.text[:1000]
    return Browser(pre_login, login_csrf.group(1), session, logout_csrf.group(1))


PATHS = st.one_of(
    st.sampled_from(
        [
            "/login",
            "/login",
            "/logout",
            "/logout",
            "/connect/fwd",
            "/connect/kitchen",
            "/connect/nope",
            "/connections",
            "/oauth/callback",
            "/login/oidc",
            "/login/callback",
            "/connect/",
            "/login/",
            "/connections/x",
        ]
    ),
    st.builds(lambda prefix, rest: prefix + quote(rest), st.sampled_from(["/connect/", "/login", "/logout"]), fs.TEXT),
)
FIELD_NAMES = st.one_of(st.sampled_from(["csrf", "key", "next", "t", "upstream", "state", "code"]), fs.TEXT)
FIELD_VALUES = st.one_of(
    fs.STRINGS,
    st.sampled_from(["//evil.example", "https://evil.example/", "/\\evil", "/connections", "javascript:alert(1)"]),
    st.builds(fs.Big, size=st.sampled_from([5000, 70000])).map(lambda big: big.char * big.size),
)


@st.composite
def forms(draw: st.DrawFn) -> tuple[dict[str, str], str | None]:
    """Form fields and the Cookie header, from genuine values (markers `fill` replaces with the browser's
    real tokens and cookies), mangled ones and made-up ones."""
    fields: dict[str, str] = draw(st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=5))
    genuine_tokens = st.sampled_from(["⟦login_csrf⟧", "⟦logout_csrf⟧"])
    csrf = draw(
        st.one_of(
            st.none(),
            genuine_tokens,
            genuine_tokens.map(lambda t: t + "é"),
            genuine_tokens.map(lambda t: t.replace("⟧", ":chop⟧")),
            st.sampled_from(["é", "日本", "\u0000", "🙂" * 40, "", " ", "a.b.c", "\x80"]),
            fs.STRINGS,
        )
    )
    if csrf is not None:
        fields["csrf"] = csrf
    if draw(st.booleans()):
        fields["key"] = draw(st.one_of(st.sampled_from(["⟦key⟧", "mfk_x_y", "⟦key⟧é", "mfd_"]), fs.STRINGS))
    genuine = st.sampled_from(["pre_login", "session"])
    cookies = draw(
        st.lists(
            st.one_of(
                genuine.map(lambda c: f"⟦{c}⟧"),
                st.builds(lambda c, v: f"⟦{c}_name⟧={v}", genuine, fs.HEADER_TEXT),
                genuine.map(lambda c: f"⟦{c}:tail⟧"),
                genuine.map(lambda c: f"⟦{c}⟧é"),
                st.builds(
                    lambda n, v: f"{n}={v}",
                    fs.HEADER_TEXT.filter(lambda t: "=" not in t and ";" not in t),
                    fs.HEADER_TEXT,
                ),
            ),
            max_size=3,
        )
    )
    cookie_header = "; ".join(c.replace("\r", "").replace("\n", "").replace("\x00", "") for c in cookies) or None
    return fields, cookie_header


def encode_form(fields: dict[str, str], kind: str) -> tuple[bytes, str | None]:
    if kind == "urlencoded":
        return urlencode(fields).encode(), "application/x-www-form-urlencoded"
    if kind == "latin-1":
        return urlencode(fields, encoding="latin-1", errors="replace").encode(), "application/x-www-form-urlencoded"
    if kind == "multipart":
        boundary = "fuzzboundary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        ]
        return (("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}")
    if kind == "json":
        return fs.encode(fields).encode(), "application/json"
    return urlencode(fields).encode(), None


@given(
    form=forms(),
    path=PATHS,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT", "DELETE"]),
    query=st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=3),
    encoding=st.sampled_from(["urlencoded", "urlencoded", "latin-1", "multipart", "json", "none"]),
    origin=st.one_of(
        st.none(), st.just("SAME"), st.sampled_from(["null", "http://evil.example", "http://127.0.0.1"]), fs.HEADER_TEXT
    ),
    fetch_site=st.one_of(
        st.none(), st.sampled_from(["same-origin", "none", "cross-site", "same-site"]), fs.HEADER_TEXT
    ),
    content_type=st.one_of(st.none(), st.none(), st.none(), fs.CONTENT_TYPES),
)
async def test_web_forms(
    probe: Probe,
    browser: Browser,
    form: tuple[dict[str, str], str | None],
    path: str,
    method: str,
    query: dict[str, str],
    encoding: str,
    origin: str | None,
    fetch_site: str | None,
    content_type: str | None,
) -> None:
    await submit(probe, browser, form, path, method, query, encoding, origin, fetch_site, content_type)


async def submit(
    probe: Probe,
    browser: Browser,
    form: tuple[dict[str, str], str | None],
    path: str,
    method: str = "POST",
    query: dict[str, str] | None = None,
    encoding: str = "urlencoded",
    origin: str | None = None,
    fetch_site: str | None = None,
    content_type: str | None = None,
) -> None:
    values = browser.values(probe.gw.key)
    fields = {fs.fill(name, values): fs.fill(value, values) for name, value in form[0].items()}
    cookie = None if form[1] is None else fs.fill(form[1], values)
    body, form_type = encode_form(fields, encoding)
    headers: dict[str, Any] = {
        "Content-Type": content_type or form_type,
        "Cookie": cookie,
        "Origin": probe.gw.base if origin == "SAME" else origin,
        "Sec-Fetch-Site": fetch_site,
    }
    target = path + ("?" + urlencode(query) if query else "")
    await probe.send(
        TARGET, method, target, headers=headers, data=body if method in ("POST", "PUT") else None, with_key=False
    )


# The cases issue 9 names: a CSRF value that is not ASCII on the sign-in form (with its genuine pre-login
# cookie) and on the sign-out form (with a genuine session).
ISSUE_CASES = [
    ("/login", ({"csrf": "⟦login_csrf⟧é", "key": "⟦key⟧"}, "⟦pre_login⟧")),
    ("/login", ({"csrf": "é", "key": "⟦key⟧"}, "⟦pre_login⟧")),
    ("/logout", ({"csrf": "é"}, "⟦session⟧")),
    ("/logout", ({"csrf": "⟦logout_csrf⟧日本"}, "⟦session⟧")),
]


@given(case=st.sampled_from(ISSUE_CASES))
async def test_web_issue_cases(
    probe: Probe, browser: Browser, case: tuple[str, tuple[dict[str, str], str | None]]
) -> None:
    path, form = case
    await submit(probe, browser, form, path)
