"""Cut context into fact-sized statements, normalize them, and name them.

Handles prose (sentences), markdown lists, tables (a row becomes "h1: c1; h2: c2"),
quoted blocks, and keeps code blocks out: code is not a fact to memorise.
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
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|No)\.$")
_SPACE = re.compile(r"\s+")
# "You are a helpful assistant." instructs the model; it states nothing about the world.
_ADDRESSED = re.compile(r"^(you|your|you're|you’re|please|always|never|do not|don't)\b", re.I)


def normalize(text: str) -> str:
    """The form facts are compared in: NFKC, single spaces, no surrounding punctuation noise."""
    text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub(" ", text).strip()


def fact_id(text: str) -> str:
    key = normalize(text).casefold().rstrip(".!;: ")
    key = re.sub(r"[^\w\s]", "", key)
    return hashlib.sha256(_SPACE.sub(" ", key).encode()).hexdigest()[:16]


def _sentences(paragraph: str) -> list[str]:
    parts = _SENTENCE_END.split(paragraph)
    out: list[str] = []
    for part in parts:
        if out and _ABBREV.search(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


def _table_rows(lines: list[str]) -> list[str]:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], [r for r in cells[1:] if r]
    if not rows:
        return ["; ".join(header)]
    return ["; ".join(f"{h}: {c}" for h, c in zip(header, row, strict=False) if c) for row in rows]


def _blocks(text: str) -> list[str]:
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
        line = _HEADING.sub("", _QUOTE.sub("", raw))
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


def segment(text: str, min_chars: int, max_chars: int) -> list[str]:
    """Fact-sized statements from a piece of context; questions and instructions are not facts."""
    out = []
    for block in _blocks(text):
        for sentence in _sentences(normalize(block)):
            s = sentence.strip()
            if min_chars <= len(s) <= max_chars and not s.endswith("?") and not _ADDRESSED.match(s):
                out.append(s)
    return out
