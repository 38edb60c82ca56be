"""What can go wrong in the OAuth leg, in words fit for the user: no token, code, verifier or secret ever
appears in a message (the other side's error codes are cut down to a short token first)."""

from __future__ import annotations

import re

_ERROR_CODE = re.compile(r"[^A-Za-z0-9_.\-]")


class OAuthError(Exception):
    """The flow cannot go on; the message is fit for the user (no tokens, codes or secrets)."""


class InvalidState(OAuthError):
    pass


class IssuerMismatch(OAuthError):
    pass


class AuthorizationDenied(OAuthError):
    pass


class ConfigurationProblem(OAuthError):
    pass


class TokenError(OAuthError):
    """The token endpoint refused: `error` is its RFC 6749 error code (e.g. invalid_grant)."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


def error_code(value: object) -> str:
    """An error code from the other side, safe to show: a short token, nothing else."""
    return _ERROR_CODE.sub("", str(value))[:64] or "unknown_error"
