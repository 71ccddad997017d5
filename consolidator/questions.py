"""Questions about a passage's statements, for training and for the gates.

Training questions are written from the parse of each (resolved) statement,
the way a reader would ask them: the answer span (a date, a place, a name, an
object) is replaced by its question word and the clause is inverted ("Okafor
was born in 1961 in Tessaly Bay." -> "When was Okafor born in Tessaly Bay?",
"Where was Okafor born in 1961?"). A rule ("Visitors must be escorted above
the second floor.", "Employees may not ...") also gives the yes/no question a
user asks when applying it ("Do visitors have to be escorted above the second
floor?" -> yes; "Can employees ...?" -> no). Two questions about one subject
combine into one. Each question carries the answer it expects, so that a
teacher answer that misses it is dropped rather than trained on
(consolidator.answers).

The held-out questions the gates ask are written by the served model instead
(see consolidator.heldout): a different procedure, so passing the gate means
the adapter generalises beyond the phrasings it was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from daemon.memory.language import Language, words
from daemon.memory.statement import STOPWORDS

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


@dataclass(frozen=True)
class Question:
    text: str
    expects: str  # what a right answer contains: a span of the statement, or "yes"/"no"
    kind: str  # "wh" | "rule" | "combined" | "asked" | "held_out"
    statement: str = ""  # the statement(s) it asks about: the teacher's focus


PHRASINGS = (
    "{q}",
    "Quick question: {q}",
    "I was wondering: {q}",
    "{q} Please answer in one sentence.",
)


def phrasings(question: Question, count: int) -> list[Question]:
    """The same question as people put it in a chat, ``count`` ways (the plain one first)."""
    return [replace(question, text=p.format(q=question.text)) for p in PHRASINGS[:count]]


def content(text: str) -> set[str]:
    return {w.casefold() for w in words(text) if w.casefold() not in STOPWORDS}


def _span_text(tokens: list[Token]) -> str:
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


def _subtree(tok: Token, skip: tuple[str, ...] = CLAUSES) -> list[Token]:
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
        out.extend(_subtree(child, skip))
    return out


def _glued(tok: Token) -> list[Token]:
    """Tokens written onto the front of ``tok`` ("self-" of "self-certify"): one word with it."""
    out: list[Token] = []
    i = tok.i - 1
    while i >= tok.sent.start and not tok.doc[i].whitespace_ and tok.doc[i].text not in "([\"'":
        out.insert(0, tok.doc[i])
        i -= 1
    return out


def _lower_first(tokens: list[Token]) -> str:
    """A phrase moved from the start of a sentence: "The company" -> "the company", names kept."""
    text = _span_text(tokens)
    head = min(tokens, key=lambda t: t.i)
    if head.lower_ in (*DETERMINERS, "you") or (head.tag_ == "NNS" and not head.ent_type_):
        return head.lower_ + text[len(head.text) :]
    return text


def _wh_word(answer: Token, prep: Token | None) -> str | None:
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


def _count(noun: Token) -> Token | None:
    """The number counting a plural noun ("312 members"), when it is a plain number."""
    if noun.tag_ not in ("NNS", "NNPS"):
        return None
    return next((c for c in noun.children if c.dep_ == "nummod" and c.like_num), None)


def _invert(sent: Span, answer: list[Token], wh: str) -> str | None:
    """The question a statement answers with ``answer`` replaced by ``wh``."""
    root = sent.root
    subj = next((t for t in root.children if t.dep_ in ("nsubj", "nsubjpass")), None)
    if subj is None or root.pos_ not in ("VERB", "AUX"):
        return None
    if subj.lower_ in UNNAMED and not list(subj.children):
        return None  # "When is this fixed?": a question about nothing named
    subject = _subtree(subj)
    glued = _glued(root)
    lead = "".join(t.text for t in glued)
    gone = {t.i for t in answer} | {t.i for t in subject} | {t.i for t in glued}
    auxes = [t for t in root.children if t.dep_ in ("aux", "auxpass") and t.i < root.i]
    negs = [t for t in root.children if t.dep_ == "neg"]
    rest = [
        t
        for child in root.children
        if child.i not in gone
        and child.dep_ not in CLAUSES
        and child not in auxes + negs
        and not (child.dep_ == "punct" and child.text in CLAUSE_PUNCT)
        for t in _subtree(child)
        if t.i not in gone
    ]
    rest_text = _span_text(rest)
    subj_text = _lower_first(subject)
    if auxes:
        tail = " ".join(x for x in [_span_text(auxes[1:] + negs), lead + root.text, rest_text] if x)
        question = f"{wh} {auxes[0].lower_} {subj_text} {tail}"
    elif root.lemma_ == "be":
        question = f"{wh} {root.lower_} {subj_text} {rest_text}"
    elif root.tag_ in DO:
        tail = " ".join(x for x in [_span_text(negs), lead + root.lemma_, rest_text] if x)
        question = f"{wh} {DO[root.tag_]} {subj_text} {tail}"
    else:
        return None
    question = re.sub(r"\s+", " ", question).strip().rstrip(".,;: ") + "?"
    return question if 4 <= len(question.split()) <= 30 else None


def _how_to(sent: Span) -> Question | None:
    """An instruction with its purpose ("Run quillctl compact to reclaim space.") -> "How do I ...?"."""
    root = sent.root
    if root.tag_ != "VB" or any(c.dep_ in ("nsubj", "nsubjpass") for c in root.children):
        return None
    purpose = next(
        (
            c
            for c in root.children
            if c.dep_ in ("advcl", "xcomp") and any(a.lower_ == "to" for a in c.children)
        ),
        None,
    )
    if purpose is None:
        return None
    goal = [t for t in _subtree(purpose) if t.lower_ != "to" or t.head != purpose]
    how = [
        t for t in _subtree(root) if t not in set(_subtree(purpose)) and t.text not in CLAUSE_PUNCT
    ]
    text = re.sub(r"\s+", " ", f"How do I {_user_view(_span_text(goal))}?")
    return Question(text, _span_text(how), "wh")


def wh_questions(lang: Language, statement: str) -> list[Question]:
    """Questions whose answer is a span of the statement (a date, a place, a name, an object)."""
    doc = lang.parse(statement)
    out: list[Question] = []
    for sent in doc.sents:
        root = sent.root
        how = _how_to(sent)
        if how is not None:
            out.append(how)
        for child in root.children:
            if child.dep_ == "prep":
                obj = next((c for c in child.children if c.dep_ == "pobj"), None)
                if obj is None:
                    continue
                wh = _wh_word(obj, child)
                answer = _subtree(child)
                expects = _span_text(_subtree(obj))
            elif child.dep_ == "dobj" and (count := _count(child)) is not None:
                counted = [t for t in _subtree(child) if t not in set(count.subtree)]
                wh = f"How many {_span_text(counted)}"  # "up to 3 days": "How many days"
                answer = _subtree(child)
                expects = count.text
            elif child.dep_ in ("dobj", "attr") and root.lemma_ != "have":
                wh = _wh_word(child, None)
                answer = _subtree(child)
                expects = _span_text(answer)
            else:
                continue
            if wh is None or not content(expects):
                continue
            text = _invert(sent, answer, wh)
            if text and not content(expects) <= content(text):
                out.append(Question(text, expects, "wh"))
    return out


def held_out_forms(lang: Language, statement: str) -> list[Question]:
    """Questions the training procedure never writes, for the gates.

    The other direction (who or what did it: "Who was honoured with the
    Brannock Prize in 2009?"), a fronted preposition ("In what year was ...
    born?"), and a rule asked as a permission ("Is it allowed for visitors
    to ...?"): other words and other grammar than the trained questions.
    """
    doc = lang.parse(statement)
    out: list[Question] = []
    for sent in doc.sents:
        root = sent.root
        subj = next((t for t in root.children if t.dep_ in ("nsubj", "nsubjpass")), None)
        if subj is None or root.pos_ not in ("VERB", "AUX"):
            continue
        named = any(t.pos_ == "PROPN" for t in _subtree(subj))
        if named and root.lemma_ != "be" and not any(t.tag_ == "MD" for t in root.children):
            subject = _subtree(subj)
            gone = {t.i for t in subject}
            rest = [
                t
                for child in root.children
                if child.i not in gone and child.dep_ not in CLAUSES and child.dep_ != "nsubj"
                and child.dep_ != "nsubjpass" and not (child.dep_ == "punct" and child.text in CLAUSE_PUNCT)
                for t in _subtree(child)
            ]  # fmt: skip
            verb = _span_text(sorted([root, *rest], key=lambda t: t.i))
            who = "Who" if subj.ent_type_ in ("PERSON", "NORP") or _personal(subj) else "What"
            text = re.sub(r"\s+", " ", f"{who} {verb}").strip().rstrip(".,;: ") + "?"
            if 4 <= len(text.split()) <= 30:
                out.append(Question(text, _span_text(subject), "held_out"))
        for prep in (c for c in root.children if c.dep_ == "prep"):
            obj = next((c for c in prep.children if c.dep_ == "pobj"), None)
            if obj is None:
                continue
            wh = _wh_word(obj, prep)
            fronted = {
                "When": f"{prep.text.capitalize()} what year",
                "Where": f"{prep.text.capitalize()} which place",
            }
            if wh not in fronted or (wh == "When" and not obj.like_num):
                continue
            inverted = _invert(sent, _subtree(prep), fronted[wh])
            if inverted:
                out.append(Question(inverted, _span_text(_subtree(obj)), "held_out"))
    for rule in rule_questions(lang, statement):
        # "Can visitors go ...?" -> "Is it allowed for visitors to go ...?"
        m = re.match(r"^(?:Can|Do|Does) (.+?) (?:have to )?(\w+)( .*)?\?$", rule.text)
        if m and rule.text.startswith("Can"):
            text = f"Is it allowed for {m.group(1)} to {m.group(2)}{m.group(3) or ''}?"
            out.append(Question(text, rule.expects, "held_out"))
        elif m:
            text = f"Is it required for {m.group(1)} to {m.group(2)}{m.group(3) or ''}?"
            out.append(Question(text, rule.expects, "held_out"))
    return out


def _personal(subj: Token) -> bool:
    """A subject that names a person: two or more capitalised words and no organisation noun."""
    words_ = [t for t in _subtree(subj) if t.pos_ == "PROPN"]
    organisational = any(t.lower_ in ORGANISATIONS for t in subj.subtree)
    return (
        len(words_) >= 2
        and not organisational
        and subj.ent_type_ not in ("ORG", "FAC", "GPE", "LOC", "PRODUCT")
    )


def rule_questions(lang: Language, statement: str) -> list[Question]:
    """The yes/no question a user asks when applying a rule, and the answer the rule gives."""
    doc = lang.parse(statement)
    out: list[Question] = []
    for sent in doc.sents:
        root = sent.root
        subj = next((t for t in root.children if t.dep_ in ("nsubj", "nsubjpass")), None)
        modal = next((t for t in root.children if t.tag_ == "MD"), None)
        if subj is None or modal is None or root.pos_ != "VERB":
            continue
        refused = any(t.lower_ in REFUSING for t in root.children if t.dep_ in ("neg", "advmod"))
        refused = refused or modal.lower_ in ("cannot", "can't")
        glued = _glued(root)
        rest = [
            t
            for child in root.children
            if child.i != subj.i and child.dep_ not in (*CLAUSES, "aux", "auxpass", "neg")
            and child not in glued
            and not (child.dep_ == "punct" and child.text in CLAUSE_PUNCT)
            and not (child.dep_ == "advmod" and child.lower_ in REFUSING)
            for t in _subtree(child)
        ]  # fmt: skip
        passive = [t for t in root.children if t.dep_ == "auxpass"]
        lead = "".join(t.text for t in glued)
        verb = " ".join(
            x
            for x in [_span_text(passive), lead + (root.lemma_ if not passive else root.text)]
            if x
        )
        who = _user_view(_lower_first(_subtree(subj)))
        plural = subj.tag_ in ("NNS", "NNPS") or subj.lower_ in ("you", "they", "we", "i")
        tail = _user_view(_span_text(rest))
        if modal.lower_ in REQUIRING and not refused:
            text, expects = f"{'Do' if plural else 'Does'} {who} have to {verb} {tail}", "yes"
        elif modal.lower_ in PERMITTING + REQUIRING or refused:
            text, expects = f"Can {who} {verb} {tail}", "no" if refused else "yes"
        else:
            continue
        text = re.sub(r"\s+", " ", text).strip().rstrip(".,;: ") + "?"
        out.append(Question(text, expects, "rule"))
    return out


def _user_view(text: str) -> str:
    """A rule addressed to "you" is asked about in the first person."""
    swaps = {"you": "I", "your": "my", "yours": "mine", "yourself": "myself"}
    return re.sub(
        r"\b(you|your|yours|yourself)\b", lambda m: swaps[m.group(1).lower()], text, flags=re.I
    )


def combined(first: Question, second: Question) -> Question:
    """Two facts of one passage asked at once ("When ..., and where ...?")."""
    text = f"{first.text.rstrip('?')}, and {second.text[:1].lower()}{second.text[1:]}"
    return Question(
        text,
        f"{first.expects}|{second.expects}",
        "combined",
        f"{first.statement} {second.statement}",
    )


def teacher_context(passage: str, focus: str) -> str:
    """The whole passage, then the sentence the question is about.

    A small model given a long passage often answers from the wrong part of
    it; pointing at the sentence the question was written from (or, for a
    user's question, the one closest to it in meaning) is what makes its
    answers worth training on.
    """
    return f"{passage}\n\nIn short: {focus}\nAnswer in one or two sentences." if focus else passage
