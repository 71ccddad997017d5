"""Recurring context as passages, and a passage's facts as self-contained statements.

A passage is a block of context that comes back: a system prompt, a pasted
document, one section of a long one. Its sentences lean on each other ("She
was honoured in 2009", "The author's first novel ..."), so each statement is
made true on its own before it is stored: third-person pronouns and
descriptions such as "the author" or "the company" are replaced by the name
they stand for, read from the passage with spaCy's parse and entities.

The resolver follows salience, as a reader does: the passage's topic is the
named subject of its first sentence (or its heading); a pronoun means the
latest person of its gender (kin words such as "her father, Tunde Okafor"
give others a gender), else the topic; "the <noun>" means whatever the
passage introduced as that noun ("Brackwater Logistics is a freight
company" binds "the company").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.memory.language import Language
from daemon.memory.segment import blocks, normalize

if TYPE_CHECKING:
    from spacy.tokens import Span, Token

_HEADING = re.compile(r"^\s*#{1,6}\s+(.+?)\s*#*\s*$")
# "Veltrun T3 thermostat — firmware 5.3 notes": the thing is named before the dash.
_TITLE_PART = re.compile(r"\s+[—–-]\s+|:\s+")
PASSAGE_MAX_CHARS = 3000
# "You are a helpful assistant." instructs the model; it states nothing about the world.
_INSTRUCTION = re.compile(
    r"^(you are|you're|you will|your (?:role|task|job|name|goal)|answer|respond|reply|"
    r"always answer|never reveal|please|do not|don't|act as|be (?:concise|brief|helpful))\b",
    re.I,
)
_ASSISTANT_WORDS = re.compile(r"\b(assistant|answer|respond|reply|chatbot|the user)\b", re.I)
GENDER = {
    "she": "Fem", "her": "Fem", "hers": "Fem", "herself": "Fem",
    "he": "Masc", "him": "Masc", "his": "Masc", "himself": "Masc",
    "it": "Neut", "its": "Neut",
}  # fmt: skip
KIN = {
    "father": "Masc", "husband": "Masc", "son": "Masc", "brother": "Masc", "uncle": "Masc",
    "grandfather": "Masc", "nephew": "Masc", "mother": "Fem", "wife": "Fem", "daughter": "Fem",
    "sister": "Fem", "aunt": "Fem", "grandmother": "Fem", "niece": "Fem",
}  # fmt: skip
PERSON_ROLES = frozenset(
    [
        "author",
        "writer",
        "novelist",
        "poet",
        "scientist",
        "artist",
        "composer",
        "painter",
        "architect",
        "engineer",
        "researcher",
        "historian",
        "explorer",
        "physician",
        "inventor",
        "founder",
        "director",
    ]
)
THING_ROLES = frozenset(
    [
        "company",
        "firm",
        "organisation",
        "organization",
        "guild",
        "foundation",
        "society",
        "town",
        "city",
        "village",
        "island",
        "museum",
        "school",
        "club",
        "team",
        "band",
        "archive",
        "library",
        "product",
        "device",
        "platform",
        "service",
    ]
)


TIME_OF_LIFE = frozenset(["future", "young", "late", "former", "elderly", "retired"])


@dataclass(frozen=True)
class Extracted:
    """A statement of a passage, its references resolved."""

    text: str  # self-contained: "Marguerite Okafor was honoured in 2009."
    source: str  # as written: "She was honoured in 2009."
    subject: str  # the resolved grammatical subject ("" when the parse has none)


def split_passages(text: str, max_chars: int = PASSAGE_MAX_CHARS) -> list[str]:
    """A message's passages: the whole message, or its sections when it is long.

    A section starts at a markdown heading; a section longer than
    ``max_chars`` is cut at paragraph breaks. Each passage keeps its heading.
    """
    text = text.strip()
    if not text:
        return []
    if len(text) <= max_chars:
        return [text]
    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        if _HEADING.match(line) and any(s.strip() for s in sections[-1]):
            sections.append([])
        sections[-1].append(line)
    out: list[str] = []
    for lines in sections:
        section = "\n".join(lines).strip()
        heading = lines[0] if _HEADING.match(lines[0]) else ""
        chunk = ""
        for paragraph in re.split(r"\n\s*\n", section):
            if chunk and len(chunk) + len(paragraph) > max_chars:
                out.append(chunk)
                chunk = heading if heading and not paragraph.startswith(heading) else ""
            chunk = f"{chunk}\n\n{paragraph}".strip()
        if chunk:
            out.append(chunk)
    return out


def is_instruction(sentence: str) -> bool:
    """Addressed to the assistant ("Always answer in French."), not a statement about the world."""
    return bool(_INSTRUCTION.match(sentence)) or (
        sentence.lower().startswith(("you ", "always ", "never "))
        and bool(_ASSISTANT_WORDS.search(sentence))
    )


@dataclass
class _Salience:
    """What the passage has introduced so far, for a reader resolving references."""

    topic: str | None = None
    topic_gender: str | None = None
    people: list[tuple[str, str]] = field(default_factory=list)  # (name, gender), latest last
    bound: dict[str, str] = field(default_factory=dict)  # "company" -> "Brackwater Logistics"

    def person(self, gender: str) -> str | None:
        for name, g in reversed(self.people):
            if g == gender:
                return name
        if self.topic and self.topic_gender in (None, gender):
            if gender in ("Fem", "Masc"):
                self.topic_gender = gender
            return self.topic
        return None


def _name(token: Token) -> str:
    """The proper name a token heads, with its compounds ("Marguerite Okafor-Lindqvist").

    The longer of the entity around the token and its compound phrase: the
    small model's entities sometimes stop short of a first name.
    """
    found = []
    for ent in token.doc.ents:
        if ent.start <= token.i < ent.end:
            found.append(_strip_det(ent))
    parts = [t for t in token.subtree if t.i <= token.i and t.dep_ in ("compound", "flat", "punct")]
    start = min([t.i for t in parts if t.i >= token.left_edge.i] + [token.i])
    found.append(_strip_det(token.doc[start : token.i + 1]))
    return max(found, key=len)


def _strip_det(span: Span) -> str:
    if len(span) > 1 and span[0].lower_ in ("the", "a", "an") and span[1].pos_ != "PROPN":
        return span[1:].text
    return span.text


def _learn(sent: Span, state: _Salience) -> None:
    """Names and what they are called, from this sentence: topic, kin, bound nouns."""
    root = sent.root
    subj = next((t for t in root.children if t.dep_ in ("nsubj", "nsubjpass")), None)
    if subj is not None and subj.pos_ == "PROPN":
        name = _name(subj)
        if state.topic is None:
            state.topic = name
        # "Brackwater Logistics is a freight company": "the company" is Brackwater Logistics.
        if root.lemma_ == "be":
            for attr in (t for t in root.children if t.dep_ == "attr" and t.pos_ == "NOUN"):
                state.bound.setdefault(attr.lower_, name)
    for tok in sent:
        # "her father, Tunde Okafor" / "his wife Ines": the name gets the kin word's gender.
        if tok.lower_ in KIN:
            for other in tok.children:
                if other.dep_ in ("appos", "compound", "npadvmod") and other.pos_ == "PROPN":
                    state.people.append((_name(other), KIN[tok.lower_]))
            if tok.dep_ in ("appos", "compound") and tok.head.pos_ == "PROPN":
                state.people.append((_name(tok.head), KIN[tok.lower_]))
        # "Lena Varga, the founder, ..." / "the company Brackwater Logistics"
        if tok.pos_ == "PROPN" and tok.dep_ == "appos" and tok.head.pos_ == "NOUN":
            state.bound.setdefault(tok.head.lower_, _name(tok))
        if tok.pos_ == "NOUN" and tok.dep_ == "appos" and tok.head.pos_ == "PROPN":
            state.bound.setdefault(tok.lower_, _name(tok.head))
        # "a ferry company": some other company. Not the subject of "is": that is the small
        # model's parse of "Tarrowmere is an island", whose island is the topic.
        if (
            tok.pos_ == "NOUN"
            and any(c.lower_ in ("a", "an") for c in tok.children)
            and not (tok.dep_ == "nsubj" and tok.head.lemma_ == "be")
        ):
            state.bound.setdefault(tok.lower_, "")


def _replacement(tok: Token, state: _Salience) -> tuple[int, int, str] | None:
    """(start, end, text) replacing a reference at ``tok``, or None."""
    low = tok.lower_
    possessive = tok.dep_ == "poss" or tok.tag_ == "PRP$"
    if tok.pos_ == "PRON" and low in GENDER:
        if tok.dep_ == "expl" or (low == "it" and _expletive(tok)):
            return None
        gender = GENDER[low]
        if gender == "Neut":  # "it" as an object is usually something local: left alone
            if any(a.dep_ == "relcl" for a in tok.ancestors):
                return None  # "the Trust, which elects its board": its is the Trust's
            subject = tok.dep_ in ("nsubj", "nsubjpass", "poss")
            name = state.topic if subject and state.topic_gender in (None, "Neut") else None
            if name:
                state.topic_gender = "Neut"
        else:
            name = state.person(gender)
        if not name:
            return None
        return tok.i, tok.i + 1, f"{name}'s" if possessive else name
    if tok.pos_ == "NOUN" and tok.dep_ in ("nsubj", "nsubjpass", "poss"):
        det = next((c for c in tok.children if c.dep_ == "det" and c.lower_ == "the"), None)
        # Only a bare "the author" (or "the future author") refers back; "the best-known
        # local product" or "the poet Ewan Strathmallory" describes or names something itself.
        if det is None or any(
            c.dep_ not in ("det", "case", "punct") and c.lower_ not in TIME_OF_LIFE
            for c in tok.children
        ):
            return None
        name = state.bound.get(low)
        if name is None and state.topic and low in PERSON_ROLES | THING_ROLES:
            name = state.topic
        if not name:
            return None
        return det.i, tok.i + 1, name
    return None


def _expletive(tok: Token) -> bool:
    """ "It is important to ...", "it takes two days": no referent."""
    head = tok.head
    return any(c.dep_ in ("ccomp", "xcomp", "csubj") for c in head.children) or head.lemma_ in (
        "take",
        "seem",
        "rain",
    )


def _resolve(sent: Span, state: _Salience) -> tuple[str, str]:
    """The sentence with references replaced, and its resolved subject."""
    doc = sent.doc
    swaps: dict[int, tuple[int, str]] = {}
    for tok in sent:
        rep = _replacement(tok, state)
        if rep is not None:
            start, end, text = rep
            swaps[start] = (end, text)
    out: list[str] = []
    subject = ""
    subj = next((t for t in sent.root.children if t.dep_ in ("nsubj", "nsubjpass")), None)
    i = sent.start
    while i < sent.end:
        if i in swaps:
            end, text = swaps[i]
            trailing = doc[end - 1].whitespace_
            out.append(text + trailing)
            i = end
        else:
            out.append(doc[i].text_with_ws)
            i += 1
    if subj is not None:
        pieces = []
        j = subj.left_edge.i
        while j <= subj.right_edge.i:
            if j in swaps:
                pieces.append(swaps[j][1] + doc[swaps[j][0] - 1].whitespace_)
                j = swaps[j][0]
            else:
                pieces.append(doc[j].text_with_ws)
                j += 1
        subject = "".join(pieces).strip()
    text = "".join(out).strip()
    return text[:1].upper() + text[1:], subject


def _states(sent: Span) -> bool:
    """A sentence, a "label: value" row or a clause with a verb; not a bare heading."""
    text = sent.text.strip()
    return text.endswith((".", "!")) or ": " in text or any(t.pos_ in ("VERB", "AUX") for t in sent)


def statements(lang: Language, passage: str, min_chars: int, max_chars: int) -> list[Extracted]:
    """The passage's statements in order, references resolved; questions and instructions skipped."""
    state = _Salience()
    heading = _HEADING.match(passage.splitlines()[0]) if passage.strip() else None
    headings = {
        normalize(m.group(1)) for line in passage.splitlines() if (m := _HEADING.match(line))
    }
    out: list[Extracted] = []
    for block in blocks(passage):
        if normalize(block) in headings:
            continue
        doc = lang.parse(normalize(block))
        for sent in doc.sents:
            source = sent.text.strip()
            _learn(sent, state)
            if heading and state.topic is None:
                state.topic = _TITLE_PART.split(heading.group(1))[0]
            text, subject = _resolve(sent, state)
            if (
                _states(sent)
                and min_chars <= len(text) <= max_chars
                and not source.endswith("?")
                and not is_instruction(source)
            ):
                out.append(Extracted(text=text, source=source, subject=subject))
    return out
