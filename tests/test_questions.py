"""Questions written from statements, and what the teacher's answers must pass to be trained on."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from consolidator.answers import real_question
from consolidator.data import (
    TEACHER_TEMPERATURE,
    PassageData,
    candidate_questions,
    passage_text,
    taught,
    verdict,
)
from consolidator.heldout import HeldOut
from consolidator.questions import Question, about, held_out_forms, rule_questions, wh_questions
from daemon.engine.client import Completion, EngineClient
from daemon.memory.language import Language
from daemon.memory.records import Passage
from daemon.memory.relevance import Embedder

LANG = Language()
POLICY = (
    "Visitors must be escorted at all times above the second floor. "
    "Employees may not share their badges. The canteen opens at 11:30."
)


def texts(questions: list[Question]) -> list[tuple[str, str]]:
    return [(q.text, q.expects) for q in questions]


def test_wh_questions_invert_the_statement_around_its_answer() -> None:
    got = texts(wh_questions(LANG, "Ilse Varga-Moreau was born in 1958 in Kestrel Point."))
    assert got == [
        ("When was Ilse Varga-Moreau born in Kestrel Point?", "1958"),
        ("Where was Ilse Varga-Moreau born in 1958?", "Kestrel Point"),
    ]
    assert texts(wh_questions(LANG, "The default port of Quillstore is 7420.")) == [
        ("What is the default port of Quillstore?", "7420")
    ]


def test_questions_keep_words_whole_and_ask_about_something_named() -> None:
    statement = "You may self-certify up to 3 consecutive days of sickness."
    assert texts(wh_questions(LANG, statement)) == [
        ("How many consecutive days of sickness may you self-certify?", "3")
    ]
    assert texts(rule_questions(LANG, statement)) == [
        ("Can I self-certify up to 3 consecutive days of sickness?", "yes")
    ]
    born = "Odalys Verhoeven (born 14 March 1957 in Brekkaford) is a novelist."
    assert texts(wh_questions(LANG, born)) == [("What is Odalys Verhoeven?", "a novelist")]
    assert wh_questions(LANG, "This is fixed in 4.2.1.") == []  # "When is this fixed?"
    leave = "Bakery-line staff cannot take annual leave between 1 and 24 December."
    assert texts(rule_questions(LANG, leave)) == [
        ("Can Bakery-line staff take annual leave between 1 and 24 December?", "no")
    ]


def test_numbers_clauses_and_agents_are_asked_about() -> None:
    ports = "Quillstore serves its metrics on port 7480; the admin console runs on port 7481."
    assert texts(wh_questions(LANG, ports)) == [
        ("What does Quillstore serve on port 7480?", "its metrics"),
        ("On which port does Quillstore serve its metrics?", "7480"),
        ("On which port does the admin console run?", "7481"),
    ]
    assert texts(wh_questions(LANG, "The manual has been translated into 12 languages.")) == [
        ("Into how many languages has the manual been translated?", "12")
    ]
    assert texts(wh_questions(LANG, "A Quillstore cluster holds at most 64 nodes.")) == [
        ("How many nodes does a Quillstore cluster hold at most?", "64")
    ]
    assert texts(wh_questions(LANG, "The Brannock Archive is run by a board of trustees.")) == [
        ("What is the Brannock Archive run by?", "a board of trustees")
    ]
    assert texts(wh_questions(LANG, "The current release is 3.4.1.")) == [
        ("What is the current release?", "3.4.1")
    ]
    assert wh_questions(LANG, "Messages are kept by default.") == []  # not "What ... by?"


def test_a_question_names_what_it_is_about() -> None:
    port = Question("On which port does the admin console run?", "7481", "wh")
    assert about(port, "Quillstore").text == "Quillstore: On which port does the admin console run?"
    named = Question("On which port does Quillstore serve its metrics?", "7480", "wh")
    assert about(named, "Quillstore") == named


def test_rules_become_the_yes_no_questions_users_ask() -> None:
    assert texts(
        rule_questions(LANG, "Visitors must be escorted at all times above the second floor.")
    ) == [("Do visitors have to be escorted at all times above the second floor?", "yes")]
    assert texts(rule_questions(LANG, "Employees may not share their badges.")) == [
        ("Can employees share their badges?", "no")
    ]
    assert texts(rule_questions(LANG, "You must wear your badge at all times.")) == [
        ("Do I have to wear my badge at all times?", "yes")
    ]


def test_held_out_questions_use_other_forms_than_training() -> None:
    statement = "Ilse Varga-Moreau drew the first survey of the Ormond Reefs in 1984."
    trained = {q.text for q in wh_questions(LANG, statement)}
    held = held_out_forms(LANG, statement)
    assert held and not trained & {q.text for q in held}
    assert (
        "In what year did Ilse Varga-Moreau draw the first survey of the Ormond Reefs?",
        "1984",
    ) in texts(held)
    rule = held_out_forms(LANG, "Employees may not share their badges.")
    assert texts(rule) == [("Is it allowed for employees to share their badges?", "no")]
    # Subjects of more than one word, and "you" asked about in the first person.
    staff = "Bakery-line and warehouse staff cannot take annual leave in December."
    assert texts(held_out_forms(LANG, staff)) == [
        (
            "Is it allowed for bakery-line and warehouse staff to take annual leave in December?",
            "no",
        )
    ]
    sick = "You may self-certify up to 3 consecutive days of sickness."
    assert texts(held_out_forms(LANG, sick)) == [
        ("Is it allowed for me to self-certify up to 3 consecutive days of sickness?", "yes")
    ]


def test_nonsense_and_off_topic_questions_are_not_questions() -> None:
    assert not real_question("Implement default null inside null in Java?", POLICY)
    assert not real_question('Bakery-line: "93', POLICY)
    assert not real_question("aaaaaaaaa floor?", POLICY)
    assert real_question("Can my guest go above the second floor alone?", POLICY)


def test_teacher_answers_that_miss_or_invent_are_dropped() -> None:
    when = Question("When does the canteen open?", "11:30", "wh")
    assert verdict(when, "The canteen opens at noon.", POLICY) == (None, "missed_answer")
    kept, _ = verdict(when, "The canteen opens at 11:30. It also sells fresh sushi daily.", POLICY)
    assert kept == "The canteen opens at 11:30."  # the invented second sentence is cut
    assert verdict(when, "The canteen opens at 11:", POLICY) == (None, "unfinished")

    # Names and numbers the passage never gives are the teacher's own: not trained.
    assert verdict(when, "The canteen opens at 11:30 since 1941.", POLICY) == (None, "ungrounded")
    # Nor a number from another of its sentences: a mix-up of two facts.
    dated = Question(
        "When did the guild start its journal?",
        "1902",
        "wh",
        "The guild has published its journal since 1902.",
    )
    history = "The guild has published its journal since 1902. Its hall was built in 1941."
    assert verdict(dated, "It has published its journal since 1902.", history)[0]
    mixed = "The guild has published its journal since 1902 and since 1941."
    assert verdict(dated, mixed, history) == (None, "ungrounded")
    assert verdict(when, "The canteen in Paris opens at 11:30.", POLICY) == (None, "ungrounded")
    assert verdict(
        rule := Question("Can employees share their badges?", "no", "rule"),
        "No, employees may not share badges since Rule 12.",
        POLICY,
    ) == (None, "ungrounded")
    assert verdict(rule, "Yes, employees can share badges.", POLICY) == (None, "wrong_polarity")
    assert verdict(rule, "No, employees may not share their badges. Ever.", POLICY)[0] == (
        "No, employees may not share their badges."
    )

    # A user's question expects what its closest statement says: an answer grounded in
    # another part of the passage is wrong for it, however "grounded" its words are.
    asked = Question(
        "Who escorts visitors upstairs?",
        "",
        "asked",
        "Visitors must be escorted at all times above the second floor.",
    )
    assert verdict(asked, "The canteen opens at 11:30.", POLICY) == (None, "unsupported")
    assert verdict(asked, "Visitors must be escorted above the second floor.", POLICY)[0]


class MisreadingTeacher(EngineClient):
    """A teacher whose greedy answer misses (the fault), and whose second draw is right."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.calls: list[tuple[float, int]] = []

    async def chat(self, model: str, messages: list[dict[str, str]], **kw: Any) -> list[Completion]:
        self.calls.append((kw["temperature"], kw["n"]))
        draws = ["The canteen opens at noon.", "The canteen opens at 11:30. Staff eat free."]
        texts = draws[:1] if kw["n"] == 1 else draws[: kw["n"]]
        return [Completion(text=t, finished=True) for t in texts]


def test_a_sampled_teacher_answer_is_kept_when_the_greedy_one_misses() -> None:
    when = Question("When does the canteen open?", "11:30", "wh")
    teacher = MisreadingTeacher()
    assert asyncio.run(taught(teacher, POLICY, when, 0)) == (
        None,
        "missed_answer",
        "The canteen opens at noon.",
    )
    target, why, greedy = asyncio.run(taught(teacher, POLICY, when, 2))
    assert (target, why) == ("The canteen opens at 11:30.", "")  # checked like any answer
    assert greedy == "The canteen opens at noon."  # kept for the dropped-answers sample
    assert teacher.calls == [(0.0, 1), (0.0, 1), (TEACHER_TEMPERATURE, 2)]


def test_held_out_scores_yes_no_by_polarity_and_spans_by_recall() -> None:
    rule = HeldOut(
        question="Is it allowed for employees to share their badges?",
        reference="Employees may not share their badges.",
        expects="no",
        teacher="No.",
    )
    assert rule.score("No, that is not allowed.") == 1.0
    assert rule.score("Yes, of course.") == 0.0
    span = HeldOut(
        question="In what year was Ilse born?",
        reference="Ilse was born in 1958 in Kestrel Point.",
        expects="1958",
        teacher="1958.",
    )
    assert span.score("She was born in 1958 in Kestrel Point.") == 1.0
    assert 0 < span.score("In 1958.") < 1.0


def test_the_passage_itself_is_learned_in_pieces_a_row_holds() -> None:
    text = "# Badges\n\n" + "\n\n".join(f"Rule {i}: " + "badges stay on. " * 12 for i in range(6))
    statements = ["Badges stay on at all times.", "Lost cards go to reception."]
    data = PassageData(passage_id="p", title="Badges", text=text, statements=statements)
    examples = passage_text(data, copies=2, max_chars=600)
    pieces = [e.answer for e in examples[:-2]]
    assert all(e.kind == "raw" and e.passage_id == "p" for e in examples)
    # A statement that does not name what it is about is learned with it.
    assert [e.answer for e in examples[-2:]] == [
        "Badges stay on at all times.",
        "Badges: Lost cards go to reception.",
    ]
    assert len(pieces) % 2 == 0 and pieces[: len(pieces) // 2] == pieces[len(pieces) // 2 :]
    assert len(pieces) > 2 and all(p.startswith("Badges\n") for p in pieces)  # each piece titled
    assert all(len(p) <= 600 + len("Badges\n") for p in pieces)
    assert all(f"Rule {i}:" in "\n".join(pieces) for i in range(6))


def test_combined_questions_ask_two_statements_at_once() -> None:
    statements = [
        "The Halsworth Guild has published The Leaded Light since 1902.",
        "The Halsworth Guild elected Imelda Fairweather as Warden in 2022.",
    ]
    passage = Passage(id="p", text=" ".join(statements), first_seen=0, last_seen=0)
    # No user questions were logged with it: the embedder is not needed.
    questions = candidate_questions(LANG, cast(Embedder, None), passage, statements)
    pairs = [q for q in questions if q.kind == "combined"]
    assert pairs and all(q.statement == " ".join(statements) for q in pairs), texts(questions)
