"""Redact secrets and personal data before any text reaches Redis.

Each pattern replaces its match with ``[REDACTED:<kind>]`` so an operator can
see that something was removed, and what sort of thing it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable

REPLACEMENT = "[REDACTED:{kind}]"


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return REPLACEMENT.format(kind="card") if _luhn_ok(digits) else match.group(0)


# Order matters: specific token shapes before the generic ones.
_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str] | None]] = [
    (
        "private_key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        None,
    ),
    ("api_key", re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}\b"), None),
    (
        "api_key",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b"),
        None,
    ),
    ("api_key", re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}\b"), None),
    ("api_key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), None),
    ("api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{30,}\b"), None),
    ("token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"), None),
    ("token", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"), None),
    (
        "password",
        re.compile(
            r"(?i)\b(password|passwd|pwd|passphrase|secret|api[_ -]?key|token)"
            r"(\s*(?:is|:|=)\s*)(\"[^\"]+\"|'[^']+'|\S+)"
        ),
        lambda m: f"{m.group(1)}{m.group(2)}{REPLACEMENT.format(kind='password')}",
    ),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), None),
    ("card", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), _card),
    (
        "phone",
        re.compile(r"(?<![\w+])\+?\d{1,3}[\s.-]?\(?\d{2,4}\)?[\s.-]?\d{3,4}[\s.-]?\d{3,4}\b"),
        None,
    ),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){3,7}(?:\s?[A-Z0-9]{1,3})?\b"), None),
]


def redact(text: str) -> str:
    return redact_counted(text)[0]


def redact_counted(text: str) -> tuple[str, int]:
    """The text redacted, and how many things were taken out (counted in /metrics)."""
    total = 0
    for kind, pattern, replace in _PATTERNS:
        text, n = pattern.subn(replace or REPLACEMENT.format(kind=kind), text)
        total += n
    return text, total
