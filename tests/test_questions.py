"""Questions written from statements, and what the teacher's answers must pass to be trained on."""

from __future__ import annotations

import random
from collections import Counter
from typing import cast

import pytest

from consolidator.answers import real_question
from consolidator.data import (
    Dataset,
    PassageData,
    candidate_questions,
    passage_text,
    renderings,
    verdict,
)
from consolidator.evaluate import gate, held_out_per_passage
from consolidator.heldout import HeldOut, held_out_forms
from consolidator.questions import Question, phrasings, rule_questions, wh_questions
from consolidator.titles import name, title, unnamed
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
    # An adverb before the verb stays there ("... also need?", not "... need also?").
    got = texts(wh_questions(LANG, "Long trips also need the approval of your department head."))
    assert got == [("What do long trips also need?", "the approval of your department head")]


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
    assert texts(rule) == [("Are employees allowed to share their badges?", "no")]


def test_held_out_questions_are_whole_questions_of_the_statement() -> None:
    """Subjects of several words, fronted adverbials, versions and clauses: each form is
    one grammatical question whose expected answer the statement gives."""
    assert texts(
        held_out_forms(LANG, "Bakery-line and warehouse workers cannot take leave in December.")
    ) == [("Are bakery-line and warehouse workers allowed to take leave in December?", "no")]
    assert texts(held_out_forms(LANG, "You may add up to 3 personal days to a trip.")) == [
        ("Am I allowed to add up to 3 personal days to a trip?", "yes")
    ]
    # "Since 1902" stays out of the reversed question; it is asked for on its own.
    journal = "Since 1902 the Halsworth Guild has published a quarterly journal."
    assert texts(held_out_forms(LANG, journal)) == [
        ("What has published a quarterly journal?", "the Halsworth Guild"),
        ("Since what year has the Halsworth Guild published a quarterly journal?", "1902"),
    ]
    # "2016 Verhoeven" misread as the subject: no question rather than a garbled one.
    taught = "From 2005 to 2016 Verhoeven-Castellane taught creative writing at Dunmarrow."
    assert held_out_forms(LANG, taught) == []
    # A version is not a year; a clause after a semicolon is a statement of its own.
    assert held_out_forms(LANG, "In 2.6.0, relayctl drain hangs on large nodes.") == []
    abolished = "The first charter limited membership to 40; the limit was abolished in 1931."
    assert ("In what year was the limit abolished?", "1931") in texts(
        held_out_forms(LANG, abolished)
    )
    # "X is a Y" is not asked backwards: an adapter taught "X is a Y" does not learn "a Y is X".
    assert held_out_forms(LANG, "The mascot of the Harrowgate Hawks is a fox named Bramble.") == []


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
    # Its words are compared by stem: "receives ... holiday" is what "receive" said.
    days = Question(
        "How many days of holiday does a full-time employee get?",
        "",
        "asked",
        "Full-time employees receive 27 days of annual leave per calendar year.",
    )
    kept, _ = verdict(days, "A full-time employee receives 27 days of holiday.", POLICY)
    assert kept == "A full-time employee receives 27 days of holiday."
    assert verdict(days, "A full-time employee receives 30 days.", POLICY)[1] == "unsupported"


def test_a_users_question_is_matched_to_its_statement_without_the_name_both_carry() -> None:
    statements = [
        "The Halsworth Guild of Glass Restorers is a professional association of stained-glass "
        "conservators, founded in 1887 in the city of Marlstead.",
        "The Halsworth Guild of Glass Restorers is run by a council of seven members.",
        "The Halsworth Guild of Glass Restorers has published a quarterly journal since 1902.",
        "Since 2022 the Warden has been Imelda Fairweather-Oduya, the first woman to hold the "
        "office.",
        "The Halsworth Guild of Glass Restorers's motto is Lux per fragmenta.",
    ]
    passage = Passage(
        id="p",
        text=" ".join(statements),
        first_seen=0,
        last_seen=0,
        questions=["Who is the current Warden of the Halsworth Guild of Glass Restorers?"],
    )
    subject = "Halsworth Guild of Glass Restorers"
    assert unnamed(passage.questions[0], subject) == "Who is the current Warden of the of?"
    assert unnamed("Sablecask 4.2's port", "Sablecask 4.2") == "4.2's port"  # versions stay
    asked = [
        q
        for q in candidate_questions(LANG, Embedder(), passage, statements, subject)
        if q.kind == "asked"
    ]
    assert [statements[3] in q.statement for q in asked] == [True], asked


def test_held_out_scores_yes_no_by_polarity_and_spans_by_recall() -> None:
    rule = HeldOut(
        question="Are employees allowed to share their badges?",
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
    data = PassageData(
        passage_id="p", title="Badges", text=text, statements=["Visitors wear red ones."]
    )
    examples = passage_text(data, copies=2, max_chars=600)
    pieces = [e.answer for e in examples[:-1]]
    assert all(e.kind == "raw" and e.passage_id == "p" for e in examples)
    assert examples[-1].answer == "Badges: Visitors wear red ones."
    assert len(pieces) % 2 == 0 and pieces[: len(pieces) // 2] == pieces[len(pieces) // 2 :]
    assert len(pieces) > 2 and all(len(p) <= 600 and "Badges" in p for p in pieces)
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


def test_a_passage_without_held_out_questions_is_not_judged_and_not_scored_one() -> None:
    leave = PassageData(passage_id="p1", title="Leave", text=POLICY, statements=["Leave rules."])
    silent = PassageData(passage_id="p2", title="Travel", text="y", statements=["Travel rules."])
    held = [
        (
            leave,
            HeldOut(question="Is it allowed?", reference="It is not.", expects="no", teacher="No."),
        ),
    ]
    per_passage, notes = held_out_per_passage([leave, silent], held, ["Yes."], ["No."])
    assert per_passage["p1"] == {"held_out": 0.0, "held_out_base": 1.0, "held_out_questions": 1.0}
    assert per_passage["p2"]["held_out_questions"] == 0.0
    assert per_passage["p2"]["held_out"] == 0.0
    assert notes == [
        "passage p1 (Leave rules.): held-out 0.00 below the base model's 1.00 on 1 questions",
        "passage p2 (Travel rules.): no held-out question passed the teacher check, not judged",
    ]
    unjudged = gate("held_out", 0.0, 0.3, judged=False)
    assert unjudged.passed and not unjudged.judged
    assert not gate("held_out", 0.2, 0.3).passed


def test_renderings_give_every_statement_under_its_title_in_several_orders() -> None:
    statements = [f"Statement {i} of the Badges policy." for i in range(7)]
    out = renderings(statements, "Badges", 3, random.Random(0))
    answers = [e.answer for e in out]
    assert all("Badges" in e.question and e.kind == "rendering" for e in out)
    assert " ".join(answers[:4]) == " ".join(statements)  # the passage's own order first
    seen = Counter(s for a in answers for s in statements if s in a)
    assert seen == dict.fromkeys(statements, 3)
    assert " ".join(answers[4:8]) != " ".join(statements)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Badges at Corrin & Hale\n\nVisitors wear red ones.", "Badges at Corrin & Hale"),
        (
            "These rules apply to all employees of Fernhollow Foods. Staff get 27 days.",
            "Fernhollow Foods",
        ),
        (
            "The Halsworth Guild of Glass Restorers was founded in 1887.",
            "Halsworth Guild of Glass Restorers",
        ),
        ("Leonardo da Vinci painted the Mona Lisa.", "Leonardo da Vinci"),
        ("In March 2020, Acme Robotics moved to Oslo.", "Acme Robotics"),
        ("Sablecask is a key-value store. Its data lives in `/var/lib/sablecask`.", "Sablecask"),
        (
            "Odalys Verhoeven-Castellane's first novel appeared in 1990.",
            "Odalys Verhoeven-Castellane",
        ),
        # Nothing named: no title rather than "This" or "Employees".
        ("This section applies to everyone who travels. Employees book trains.", ""),
        ("Employees may work remotely. Most employees do.", ""),
    ],
)
def test_a_passage_is_titled_by_its_heading_or_the_first_name_it_gives(
    text: str, expected: str
) -> None:
    assert title(text, [text.split("\n")[-1].split(". ")[0] + "."]) == expected


def test_a_passage_without_a_name_is_learned_without_a_heading() -> None:
    data = PassageData(
        passage_id="p",
        title="",
        text="Employees book trains.",
        statements=["Employees book trains."],
    )
    assert [e.answer for e in passage_text(data, copies=1)] == ["Employees book trains."] * 2
    assert Dataset(examples=[], passages=[data]).routing_texts() == ["Employees book trains."]
    prompts = [e.question for e in renderings(data.statements, "", 1, random.Random(0))]
    assert prompts and all(p.rstrip("?.").endswith("about this") for p in prompts)


def test_a_question_that_does_not_say_what_it_is_about_is_asked_about_its_document() -> None:
    assert name("Visitors at Corrin & Hale", "All visitors sign in.") == "Corrin & Hale"
    subject = name("Tarrowmere Commons — the land trust", "The tenants formed a trust.")
    unnamed = Question("What did the tenants form?", "the Trust", "wh")
    assert [q.text for q in phrasings(unnamed, 3, subject)] == [
        "What did the tenants form?",
        "Quick question about Tarrowmere Commons: What did the tenants form?",
        "I was wondering about Tarrowmere Commons: What did the tenants form?",
    ]
    named = Question("When was Tarrowmere settled?", "1140", "wh")
    assert [q.text for q in phrasings(named, 2, subject)][1] == (
        "Quick question: When was Tarrowmere settled?"
    )
