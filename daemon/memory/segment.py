"""Context as text units before sentences are read, normalized, and named.

Handles prose paragraphs, markdown lists, tables (a row becomes "h1: c1; h2: c2"),
quoted blocks and headings, and keeps code blocks out: code is not a fact to
memorise. daemon.memory.passages reads the sentences of each unit.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_FENCE = re.compile(r"^\s*(```|~~~)")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_QUOTE = re.compile(r"^\s*>+\s?")
_HEADING = re.compile(r"^\s*#{1,6}\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_SPACE = re.compile(r"\s+")
_EMPHASIS = re.compile(r"(\*\*|__|`)(.+?)\1")


def normalize(text: str) -> str:
    """The form facts are compared in: NFKC, single spaces, no markdown emphasis."""
    text = unicodedata.normalize("NFKC", text)
    text = _EMPHASIS.sub(r"\2", text)
    return _SPACE.sub(" ", text).strip()


def fact_id(text: str) -> str:
    key = normalize(text).casefold().rstrip(".!;: ")
    key = re.sub(r"[^\w\s]", "", key)
    return hashlib.sha256(_SPACE.sub(" ", key).encode()).hexdigest()[:16]


def _table_rows(lines: list[str]) -> list[str]:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], [r for r in cells[1:] if r]
    if not rows:
        return ["; ".join(header)]
    return ["; ".join(f"{h}: {c}" for h, c in zip(header, row, strict=False) if c) for row in rows]


def blocks(text: str) -> list[str]:
    """Units before sentence splitting: paragraphs, list items, table rows; no code."""
    units: list[str] = []
    paragraph: list[str] = []
    table: list[str] = []
    in_code = False

    def flush() -> None:
        if paragraph:
            units.append(" ".join(paragraph))
            paragraph.clear()
        if table:
            units.extend(_table_rows(table))
            table.clear()

    for raw in text.splitlines():
        if _FENCE.match(raw):
            flush()
            in_code = not in_code
            continue
        if in_code:
            continue
        line = _QUOTE.sub("", raw)
        if _HEADING.match(line):  # a heading is a unit of its own, not part of a paragraph
            flush()
            paragraph.append(_HEADING.sub("", line).strip())
            flush()
            continue
        if not line.strip():
            flush()
        elif "|" in line and line.strip().startswith("|"):
            if paragraph:
                flush()
            if not _TABLE_RULE.match(line):
                table.append(line)
        elif _BULLET.match(line):
            flush()
            paragraph.append(_BULLET.sub("", line))
        elif raw.startswith(("    ", "\t")) and not paragraph:
            continue  # indented code block
        else:
            if table:
                flush()
            paragraph.append(line.strip())
    flush()
    return units
