"""Reading a statement's parse the way a question writer needs it.

Phrases without the clauses hanging off them, a span's text as written, the
question word an answer calls for, a clause inverted around its answer, and
the rules a statement gives (who may, must or may not do what). Training
questions (consolidator.questions) and the gates' held-out questions
(consolidator.heldout) are both written from these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.memory.language import Language

if TYPE_CHECKING:
    from spacy.tokens import Span, Token

CLAUSES = ("relcl", "advcl", "appos", "parataxis", "conj", "cc", "mark", "ccomp")
CLAUSE_PUNCT = ",;:.!?()"
DETERMINERS = (
    "the",
    "a",
    "an",
    "our",
    "this",
    "that",
    "these",
    "those",
    "its",
    "their",
    "each",
    "every",
    "all",
)
PLACE_PREPS = ("in", "at", "near", "from", "on", "inside", "outside")
PLACES = ("GPE", "LOC", "FAC")
WHEN = ("DATE", "TIME")
PEOPLE = ("PERSON",)
DO = {"VBD": "did", "VBZ": "does", "VBP": "do"}
ORGANISATIONS = frozenset(
    [
        "guild",
        "company",
        "foundation",
        "society",
        "university",
        "school",
        "museum",
        "bank",
        "council",
        "institute",
        "club",
        "association",
        "library",
        "archive",
        "hospital",
        "church",
        "abbey",
        "team",
        "band",
        "firm",
        "group",
    ]
)
REFUSING = ("not", "never", "n't", "no")
UNNAMED = frozenset(["this", "that", "these", "those", "it", "they", "he", "she", "them"])
PERMITTING = ("may", "can", "could", "might")
REQUIRING = ("must", "should", "shall")
YEAR = re.compile(r"1[0-9]{3}|20[0-9]{2}")


def span_text(tokens: list[Token]) -> str:
    """The tokens in sentence order, spaced as written (a gap where a token was left out).

    A word that opened the sentence ("At weekends ...") is lowered when moved
    inside a question, unless it is a name.
    """
    ordered = sorted(tokens, key=lambda t: t.i)
    out = []
    for i, t in enumerate(ordered):
        word = t.text.lower() if t.is_sent_start and t.pos_ != "PROPN" else t.text
        gap = t.whitespace_ or (" " if i + 1 < len(ordered) and ordered[i + 1].i != t.i + 1 else "")
        out.append(word + gap)
    return "".join(out).strip()


def phrase(tok: Token, skip: tuple[str, ...] = CLAUSES) -> list[Token]:
    """The token's phrase without the clauses hanging off it (", where ...", "(born ...)")."""
    out = [tok]
    for child in tok.children:
        # "between 1 and 24 December": coordinated words stay; coordinated clauses go.
        listed = child.dep_ in ("conj", "cc") and tok.pos_ not in ("VERB", "AUX")
        if (child.dep_ in skip and not listed) or (
            child.dep_ == "punct" and child.text in CLAUSE_PUNCT
        ):
            continue
        edge = child.left_edge.i
        if child.left_edge.text == "(" or (edge > 0 and tok.doc[edge - 1].text == "("):
            continue  # a parenthesis: an aside, not part of the phrase
        out.extend(phrase(child, skip))
    return out


def glued_to(tok: Token) -> list[Token]:
    """Tokens written onto the front of ``tok`` ("self-" of "self-certify"): one word with it."""
    out: list[Token] = []
    i = tok.i - 1
    while i >= tok.sent.start and not tok.doc[i].whitespace_ and tok.doc[i].text not in "([\"'":
        out.insert(0, tok.doc[i])
        i -= 1
    return out


def lower_first(tokens: list[Token]) -> str:
    """A phrase moved from the start of a sentence: "The company" -> "the company", names kept."""
    text = span_text(tokens)
    head = min(tokens, key=lambda t: t.i)
    if head.lower_ in (*DETERMINERS, "you") or (head.tag_ == "NNS" and not head.ent_type_):
        return head.lower_ + text[len(head.text) :]
    return text


def wh_word(answer: Token, prep: Token | None) -> str | None:
    ent = answer.ent_type_
    if prep is not None:
        if ent in WHEN or (answer.like_num and len(answer.text) == 4 and prep.lower_ == "in"):
            return "When"
        placelike = ent in PLACES or answer.pos_ == "PROPN" or "/" in answer.text
        if placelike and prep.lower_ in PLACE_PREPS:
            return "Where"
        return None
    if ent in PEOPLE:
        return "Who"
    if answer.dep_ == "dobj" and (
        any(c.dep_ == "nummod" for c in answer.children) or answer.like_num
    ):
        return None  # "How many ..." needs the counted noun moved: left to the teacher's phrasing
    return "What"


def count_of(noun: Token) -> Token | None:
    """The number counting a plural noun ("312 members"), when it is a plain number."""
    if noun.tag_ not in ("NNS", "NNPS"):
        return None
    return next((c for c in noun.children if c.dep_ == "nummod" and c.like_num), None)


def subject_of(verb: Token) -> Token | None:
    return next((t for t in verb.children if t.dep_ in ("nsubj", "nsubjpass")), None)


def invert(sent: Span, answer: list[Token], wh: str) -> str | None:
    """The question a statement answers with ``answer`` replaced by ``wh``."""
    root = sent.root
    subj = subject_of(root)
    if subj is None or root.pos_ not in ("VERB", "AUX"):
        return None
    if subj.lower_ in UNNAMED and not list(subj.children):
        return None  # "When is this fixed?": a question about nothing named
    subject = phrase(subj)
    glued = glued_to(root)
    lead = "".join(t.text for t in glued)
    gone = {t.i for t in answer} | {t.i for t in subject} | {t.i for t in glued}
    auxes = [t for t in root.children if t.dep_ in ("aux", "auxpass") and t.i < root.i]
    # "not", and an adverb between the subject and the verb ("also", "still", "then"),
    # stay in front of the verb: "What do requests also need?", not "... need also?".
    negs = [
        t
        for t in root.children
        if t.dep_ == "neg" or (t.dep_ == "advmod" and subj.i < t.i < root.i and len(phrase(t)) == 1)
    ]
    rest = [
        t
        for child in root.children
        if child.i not in gone
        and child.dep_ not in CLAUSES
        and child not in auxes + negs
        and not (child.dep_ == "punct" and child.text in CLAUSE_PUNCT)
        for t in phrase(child)
        if t.i not in gone
    ]
    rest_text = span_text(rest)
    subj_text = lower_first(subject)
    if auxes:
        tail = " ".join(x for x in [span_text(auxes[1:] + negs), lead + root.text, rest_text] if x)
        question = f"{wh} {auxes[0].lower_} {subj_text} {tail}"
    elif root.lemma_ == "be":
        question = f"{wh} {root.lower_} {subj_text} {rest_text}"
    elif root.tag_ in DO:
        tail = " ".join(x for x in [span_text(negs), lead + root.lemma_, rest_text] if x)
        question = f"{wh} {DO[root.tag_]} {subj_text} {tail}"
    else:
        return None
    question = as_question(question)
    return question if 4 <= len(question.split()) <= 30 else None


def personal(subj: Token) -> bool:
    """A subject that names a person: a name of two or more words, no organisation noun."""
    words_ = [t for t in phrase(subj) if t.pos_ == "PROPN"]
    organisational = any(t.lower_ in ORGANISATIONS for t in subj.subtree)
    return (
        subj.pos_ == "PROPN"
        and len(words_) >= 2
        and not organisational
        and subj.ent_type_ not in ("ORG", "FAC", "GPE", "LOC", "PRODUCT")
    )


@dataclass(frozen=True)
class Rule:
    who: str  # "visitors", "I"
    verb: str  # "be escorted", "self-certify"
    tail: str  # "at all times above the second floor"
    required: bool  # must/should (else may/can, or a refusal)
    expects: str  # "yes" | "no"
    plural: bool


def rules(lang: Language, statement: str) -> list[Rule]:
    """The rules a statement gives: who may, must or may not do what."""
    out: list[Rule] = []
    for sent in lang.parse(statement).sents:
        root = sent.root
        subj = subject_of(root)
        modal = next((t for t in root.children if t.tag_ == "MD"), None)
        if subj is None or modal is None or root.pos_ != "VERB":
            continue
        refused = any(t.lower_ in REFUSING for t in root.children if t.dep_ in ("neg", "advmod"))
        refused = refused or modal.lower_ in ("cannot", "can't")
        if modal.lower_ not in PERMITTING + REQUIRING and not refused:
            continue
        glued = glued_to(root)
        rest = [
            t
            for child in root.children
            if child.i != subj.i and child.dep_ not in (*CLAUSES, "aux", "auxpass", "neg")
            and child not in glued
            and not (child.dep_ == "punct" and child.text in CLAUSE_PUNCT)
            and not (child.dep_ == "advmod" and child.lower_ in REFUSING)
            for t in phrase(child)
        ]  # fmt: skip
        passive = [t for t in root.children if t.dep_ == "auxpass"]
        lead = "".join(t.text for t in glued)
        verb = " ".join(
            x for x in [span_text(passive), lead + (root.lemma_ if not passive else root.text)] if x
        )
        out.append(
            Rule(
                who=user_view(lower_first(phrase(subj))),
                verb=verb,
                tail=user_view(span_text(rest)),
                required=modal.lower_ in REQUIRING and not refused,
                expects="no" if refused else "yes",
                plural=subj.tag_ in ("NNS", "NNPS") or subj.lower_ in ("you", "they", "we", "i"),
            )
        )
    return out


def as_question(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".,;: ") + "?"


def user_view(text: str) -> str:
    """A rule addressed to "you" is asked about in the first person."""
    swaps = {"you": "I", "your": "my", "yours": "mine", "yourself": "myself"}
    return re.sub(
        r"\b(you|your|yours|yourself)\b", lambda m: swaps[m.group(1).lower()], text, flags=re.I
    )
