"""Training questions about a passage's statements.

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

The gates' held-out questions are written another way (consolidator.heldout),
so that passing them means the adapter generalises beyond the phrasings it
was trained on. Both read statements through consolidator.syntax.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import snowballstemmer

from consolidator.syntax import (
    CLAUSE_PUNCT,
    as_question,
    count_of,
    invert,
    phrase,
    rules,
    span_text,
    subject_of,
    user_view,
    wh_word,
)
from daemon.memory.language import Language, words
from daemon.memory.statement import STOPWORDS

if TYPE_CHECKING:
    from spacy.tokens import Span


@dataclass(frozen=True)
class Question:
    text: str
    expects: str  # what a right answer contains: a span of the statement, or "yes"/"no"
    kind: str  # "wh" | "rule" | "combined" | "asked" | "held_out"
    statement: str = ""  # the statement(s) it asks about: the teacher's focus


PHRASINGS = (
    "{q}",
    "Quick question{about}: {q}",
    "I was wondering{about}: {q}",
    "{q} Please answer in one sentence.",
)


def phrasings(question: Question, count: int, subject: str = "") -> list[Question]:
    """The same question as people put it in a chat, ``count`` ways (the plain one first).

    Asked without its document in context, a question names what it is about
    ("... at Fernhollow Foods?"); one written from a statement often does not
    ("What did the tenants form?"). The lead-ins then name ``subject``, so that
    the answer is learned as one about it.
    """
    named = not subject or content(subject) & content(question.text)
    about = "" if named else f" about {subject}"
    return [
        replace(question, text=p.format(q=question.text, about=about)) for p in PHRASINGS[:count]
    ]


def content(text: str) -> set[str]:
    """The text's words that carry its content, by stem: "receives" and "received" are one word,
    so that an answer is not taken for saying more than its passage only for its endings."""
    return {stem(w.casefold()) for w in words(text) if w.casefold() not in STOPWORDS}


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    return str(snowballstemmer.stemmer("english").stemWord(word))


def _how_to(sent: Span) -> Question | None:
    """An instruction with its purpose ("Run quillctl compact to reclaim space.") -> "How do I ...?"."""
    root = sent.root
    if root.tag_ != "VB" or subject_of(root) is not None:
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
    goal = [t for t in phrase(purpose) if t.lower_ != "to" or t.head != purpose]
    how = [t for t in phrase(root) if t not in set(phrase(purpose)) and t.text not in CLAUSE_PUNCT]
    text = re.sub(r"\s+", " ", f"How do I {user_view(span_text(goal))}?")
    return Question(text, span_text(how), "wh")


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
                wh = wh_word(obj, child)
                answer = phrase(child)
                expects = span_text(phrase(obj))
            elif child.dep_ == "dobj" and (count := count_of(child)) is not None:
                counted = [t for t in phrase(child) if t not in set(count.subtree)]
                wh = f"How many {span_text(counted)}"  # "up to 3 days": "How many days"
                answer = phrase(child)
                expects = count.text
            elif child.dep_ in ("dobj", "attr") and root.lemma_ != "have":
                wh = wh_word(child, None)
                answer = phrase(child)
                expects = span_text(answer)
            else:
                continue
            if wh is None or not content(expects):
                continue
            text = invert(sent, answer, wh)
            if text and not content(expects) <= content(text):
                out.append(Question(text, expects, "wh"))
    return out


def rule_questions(lang: Language, statement: str) -> list[Question]:
    """The yes/no question a user asks when applying a rule, and the answer the rule gives."""
    out = []
    for r in rules(lang, statement):
        ask = f"{'Do' if r.plural else 'Does'} {r.who} have to" if r.required else f"Can {r.who}"
        out.append(Question(as_question(f"{ask} {r.verb} {r.tail}"), r.expects, "rule"))
    return out


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
