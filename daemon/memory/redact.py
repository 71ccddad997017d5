"""Redact secrets and personal data before any text reaches Redis, logs or training.

Two detectors, merged: Yelp's detect-secrets (its named plugins for cloud,
payment and chat keys, JWTs, private keys and credentials in URLs; its
entropy plugins for long random tokens) and memoryd's own patterns for what
it does not look for: personal data (SSN, IBAN, card numbers checked with
Luhn, phone numbers, email), passwords in prose, database URLs and the body
lines of a PEM key. Each match becomes ``[REDACTED:<kind>]`` so an operator
can see that something was removed and what sort of thing, never the value.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from detect_secrets.core.potential_secret import PotentialSecret
from detect_secrets.core.scan import get_plugins
from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
from detect_secrets.settings import default_settings

MARKER = "[REDACTED:"
REPLACEMENT = MARKER + "{kind}]"
ENTROPY_MIN_CHARS = 20  # shorter "random-looking" words are ordinary prose

# detect-secrets' secret types -> memoryd's kinds (anything unnamed is an api_key).
_DS_KINDS = {
    "JSON Web Token": "token",
    "Private Key": "private_key",
    "Basic Auth Credentials": "password",
    "Secret Keyword": "password",
    "Base64 High Entropy String": "token",
    "Hex High Entropy String": "token",
}


@dataclass
class Redacted:
    """A text with its secrets replaced, and how many of each kind were."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


Span = tuple[int, int, str]  # start, end, kind


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = re.sub(r"\s", "", text)
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(n) % 97 == 1


def _digits(m: re.Match[str]) -> str:
    return re.sub(r"\D", "", m.group(0))


Check = Callable[[re.Match[str]], bool]
# kind, pattern, the group to redact (0: the whole match), an extra check on the match.
_PATTERNS: list[tuple[str, re.Pattern[str], int, Check | None]] = [
    (
        "private_key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        0,
        None,
    ),
    # A key's body pasted without its armour: whole lines of base64.
    ("private_key", re.compile(r"^[A-Za-z0-9+/]{40,}={0,2}$", re.M), 0, None),
    ("api_key", re.compile(r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_-]{16,}\b"), 0, None),
    ("api_key", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,})\b"), 0, None),
    ("api_key", re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}\b"), 0, None),
    ("api_key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), 0, None),
    ("api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{30,}\b"), 0, None),
    ("api_key", re.compile(r"\bSG\.[\w-]{16,}\.[\w-]{16,}"), 0, None),
    ("token", re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*"), 0, None),
    ("token", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})"), 1, None),
    # scheme://user:password@host (databases, brokers, mirrors)
    ("password", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@"), 1, None),
    # "The admin password is X", "passphrase: a b c", "api_key = X": the value to the clause's end.
    (
        "password",
        re.compile(
            r"(?i)\b(?:password|passwd|pwd|passphrase|passcode|secret(?:[_ ]access)?[_ ]key|"
            r"secret|api[_ -]?key|token|pin)\b\s*(?:is|was|:|=)\s*"
            r"(\"[^\"\n]+\"|'[^'\n]+'|[^\s,;]+?(?:[ \t]+[^\s,;.]+)*?)(?=[.,;]?(?:\s*$|\s*\n|[,;]))",
            re.M,
        ),
        1,
        None,
    ),
    (
        "email",
        re.compile(r"(?<![:/\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
        0,
        None,
    ),
    ("ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"), 0, None),
    (
        "iban",
        re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
        0,
        lambda m: _iban_ok(m.group(0)),
    ),
    (
        "card",
        re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
        0,
        lambda m: _luhn_ok(_digits(m)),
    ),
    (
        "phone",
        re.compile(
            r"(?:(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){2,5}"
            r"|(?<!\w)\(?\b\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}\b)"
        ),
        0,
        lambda m: 7 <= len(_digits(m)) <= 15,
    ),
]


def _pattern_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    for kind, pattern, group, check in _PATTERNS:
        for m in pattern.finditer(text):
            if check is None or check(m):
                spans.append((m.start(group), m.end(group), kind))
    return spans


def _entropy(plugin: object) -> bool:
    return isinstance(plugin, HighEntropyStringsPlugin)


def _kept(plugin: object, secret: PotentialSecret) -> bool:
    """detect-secrets' eager search reports every word; entropy findings must be long and random."""
    if not isinstance(plugin, HighEntropyStringsPlugin):
        return True
    value = secret.secret_value or ""
    return (
        len(value) >= ENTROPY_MIN_CHARS
        and plugin.calculate_shannon_entropy(value) >= plugin.entropy_limit
    )


def detect_secrets_spans(text: str) -> list[Span]:
    """What detect-secrets finds in ``text``, line by line, as spans of the text."""
    found: set[tuple[str, str]] = set()
    with default_settings():
        plugins = list(get_plugins())
        for line in text.splitlines():
            for plugin in plugins:
                # Eager search: entropy plugins look at bare words, not only quoted strings.
                eager = {"enable_eager_search": True} if _entropy(plugin) else {}
                for secret in plugin.analyze_line(
                    filename="memoryd", line=line, line_number=0, **eager
                ):
                    if secret.secret_value and _kept(plugin, secret):
                        kind = _DS_KINDS.get(secret.type, "api_key")
                        found.add((secret.secret_value, kind))
    spans: list[Span] = []
    for value, kind in found:
        start = text.find(value)
        while start >= 0:
            spans.append((start, start + len(value), kind))
            start = text.find(value, start + 1)
    return spans


def _apply(text: str, spans: list[Span]) -> Redacted:
    """Overlapping spans merge into one redaction, named by the first (widest) to start."""
    # sorted() is stable: of equal spans the one listed first names the redaction.
    merged: list[Span] = []
    for start, stop, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
        if merged and start < merged[-1][1]:
            first, last, named = merged[-1]
            merged[-1] = (first, max(last, stop), named)
        else:
            merged.append((start, stop, kind))
    out = Redacted(text="")
    parts: list[str] = []
    pos = 0
    for start, stop, kind in merged:
        parts += [text[pos:start], REPLACEMENT.format(kind=kind)]
        out.counts[kind] += 1
        pos = stop
    parts.append(text[pos:])
    out.text = "".join(parts)
    return out


def redact_counted(text: str) -> Redacted:
    """``text`` with every secret and piece of personal data replaced, counted by kind."""
    # memoryd's spans first: where both name the same span, the specific kind wins.
    return _apply(text, _pattern_spans(text) + detect_secrets_spans(text))


def redact(text: str) -> str:
    return redact_counted(text).text


def patterns_only(text: str) -> Redacted:
    """memoryd's own patterns alone: how much detect-secrets adds is measured against it."""
    return _apply(text, _pattern_spans(text))


def detect_secrets_only(text: str) -> Redacted:
    """detect-secrets alone, for measuring what memoryd's patterns add."""
    return _apply(text, detect_secrets_spans(text))
