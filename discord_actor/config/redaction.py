"""Secrets never printed: credentials inside URLs and text shown as ``***``, and settings
whose keys look secret hidden whole."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

# Settings keys whose values are never shown (matched case-insensitively as substrings).
_SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "api-key",
                 "private_key", "credential")


def redact_url(url: str) -> str:
    """``url`` with its credentials as ``***``: the password of the user-info part, every
    parameter whose name looks secret (``password``, ``sslpassword``, ``*password*``,
    ``*token*``...) and anything ``redact_text`` hides.

    Errs on the side of hiding too much when the URL is odd, never too little.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            user = rest[:at].split(":", 1)[0]
            rest = f"{user}:{REDACTED}{rest[at:]}"
        url = scheme + sep + rest
    return redact_text(url)


_SECRET_NAME = "|".join(re.escape(word) for word in _SECRET_WORDS)
_TOKENISH = r"(?=[\w.~+/=-]*(?:[\d.~+/=_-]|(?-i:[a-z][A-Z])))"
# Credentials as they appear inside any text (a settings value, an error message, a log line).
_CREDENTIALS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host: the password may hold ':' or '@'; the last '@' before the
    # path (or the end of the word) ends it.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*(@)"),
     rf"\g<1>{REDACTED}\g<2>"),
    # name=value where the name looks secret: URL parameters (?sslpassword=...&) and
    # key=value connection strings (password='...').
    (re.compile(rf"(?i)((?<![\w.-])[\w.-]*(?:{_SECRET_NAME})[\w.-]*\s*=\s*)"
                r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&#;,'\"]+)"),
     rf"\g<1>{REDACTED}"),
    # The same in a printed mapping: {'password': '...'} or "api_token": "...".
    (re.compile(rf"""(?i)((['"])[\w.-]*(?:{_SECRET_NAME})[\w.-]*\2\s*:\s*)"""
                r"""(['"])(?:(?!\3)[^\\]|\\.)*\3"""),
     rf"\g<1>\g<3>{REDACTED}\g<3>"),
    # HTTP authorization values and Discord's "Bot <token>". A token has some length and a
    # digit, a symbol or a capital inside, so prose ("basic setup", "Bot started") stays.
    (re.compile(rf"(?i)\b(bearer|basic)(\s+){_TOKENISH}[\w.~+/=-]{{8,}}"),
     rf"\g<1>\g<2>{REDACTED}"),
    (re.compile(rf"\b(Bot)(\s+){_TOKENISH}[\w.~+/=-]{{20,}}"), rf"\g<1>\g<2>{REDACTED}"),
    # A Discord webhook URL carries its token in the path.
    (re.compile(r"(?i)(/api/(?:v\d+/)?webhooks/\d+/)[\w.-]+"), rf"\g<1>{REDACTED}"),
    # A bare Discord bot token: three base64url parts separated by dots.
    (re.compile(r"\b[MNO][\w-]{23,27}\.[\w-]{6,7}\.[\w-]{27,40}\b"), REDACTED),
)


def redact_text(text: str) -> str:
    """``text`` with the credentials it may embed shown as ``***``: passwords in URLs,
    secret-looking ``name=value`` parameters, ``Bearer``/``Basic``/``Bot`` tokens, Discord
    webhook tokens and bot tokens. For any text that is printed or logged."""
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    """Whether a settings key names a secret (its value is never shown)."""
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)


def redact_strings(value: Any) -> Any:
    """Credentials inside strings hidden (``redact_text``); keys are not looked at."""
    if isinstance(value, dict):
        return {k: redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_strings(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value


def redact_settings(value: Any) -> Any:
    """Secret-looking keys hidden whole; credentials inside other strings hidden too."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) else redact_settings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_settings(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value

