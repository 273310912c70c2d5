"""The general-abilities regression set: the data file, each category's checker, drop reports."""

from collections import Counter

import pytest
from tunery_evaljudge.general_set import (
    DATA_FILE,
    GeneralItem,
    check_answer,
    compare_with_base,
    eval_items,
    load_general_set,
    score_general_set,
)
from tunery_evaljudge.general_set_build import build_general_set, to_jsonl
from tunery_evaljudge.graders.criteria import grader_from_dict
from tunery_evaljudge.templates import Sample

ITEMS = load_general_set()


def test_the_data_file_is_what_the_generator_builds():
    assert DATA_FILE.read_text(encoding="utf-8") == to_jsonl(build_general_set())


def test_at_least_a_hundred_items_over_four_categories_with_distinct_ids():
    counts = Counter(item.category for item in ITEMS)
    assert len(ITEMS) >= 100
    assert set(counts) == {"arithmetic", "instruction_following", "formatting", "factual"}
    assert min(counts.values()) >= 20
    assert len({item.id for item in ITEMS}) == len(ITEMS)


def test_every_reference_answer_passes_its_own_check():
    failing = [(item.id, check_answer(item, item.reference).reason) for item in ITEMS]
    assert [f for f in failing if f[1] is not None] == []


def test_eval_items_hold_the_prompt_reference_category_and_check():
    items = eval_items()
    assert [i["id"] for i in items] == [item.id for item in ITEMS]
    for as_eval, item in zip(items, ITEMS, strict=True):
        assert as_eval["messages"] == item.prompt and as_eval["messages"][-1]["role"] == "user"
        assert (as_eval["reference"], as_eval["category"], as_eval["check"]) == (
            item.reference,
            item.category,
            item.check,
        )


def test_the_item_check_grader_applies_each_items_own_check():
    grader = grader_from_dict({"type": "item_check", "name": "general"})
    for as_eval in eval_items()[::10]:
        assert grader.grade(as_eval, Sample(as_eval["reference"])).passed is True
    sums = next(i for i in eval_items() if i["check"]["kind"] == "number")
    wrong = grader.grade(sums, Sample("no idea"))
    assert (wrong.passed, wrong.error) == (False, "no number in the answer")
    # An item whose check is missing or broken is not graded (an error), never a pass or a fail.
    for bad_check in (None, {"kind": "telepathy"}, {"kind": "number"}):
        result = grader.grade({"check": bad_check}, Sample("42"))
        assert result.passed is None and "item.check" in result.error


def item(kind: str, **spec) -> GeneralItem:
    return GeneralItem("x-001", "x", [{"role": "user", "content": "?"}], {"kind": kind, **spec})


@pytest.mark.parametrize(
    "check, good, bad",
    [
        # arithmetic
        (item("number", value=84), "84", "85"),
        (item("number", value=84), "12 x 7 = 84.", "about eighty"),
        (item("number", value=1660), "The sum is 1,660", "1,650"),
        (item("number", value=-3), "-3", "3"),
        # instruction following
        (item("word_count", n=3), "Vast, deep blue.", "Vast deep blue sea"),
        (item("word_count", n=4), "It's a well-known place", "It is a well known place"),
        (item("uppercase"), "THE SEA IS BLUE!", "The sea is blue"),
        (item("uppercase"), "THE SEA IS BLUE!", "123"),
        (item("lowercase"), "the sea is blue.", "The sea is blue."),
        (item("starts_with", word="Perhaps"), '"Perhaps" the moon is pale.', "The moon is perhaps pale."),
        (item("starts_with", word="Perhaps"), "perhaps not", "Perhapsly not"),
        (
            item("ends_with", phrase="That is all"),
            "The moon is pale. That is all.",
            "That is all, the moon is pale.",
        ),
        (item("excludes", text=","), "No commas here. None at all.", "One, two."),
        (item("excludes", text=","), "Fine.", "   "),
    ],
)
def test_checkers_pass_correct_and_fail_incorrect_answers(check, good, bad):
    assert check_answer(check, good).passed is True
    result = check_answer(check, bad)
    assert result.passed is False and result.reason


@pytest.mark.parametrize(
    "check, good, bad",
    [
        (item("json_keys", keys=["title", "year"]), '{"title": "T", "year": 2001}', '{"title": "T"}'),
        (
            item("json_keys", keys=["title", "year"]),
            '{"year": 1, "title": "T"}',
            '{"title": "T", "year": 1, "x": 0}',
        ),
        (
            item("json_keys", keys=["title", "year"]),
            '{"title": "T", "year": 1}',
            '```json\n{"title": "T", "year": 1}\n```',
        ),
        (item("bullet_list", n=3), "- a\n- b\n- c", "- a\n- b"),
        (item("bullet_list", n=3), "* a\n* b\n• c\n", "Here you go:\n- a\n- b\n- c"),
        (item("numbered_list", n=3), "1. a\n2. b\n3. c", "1. a\n3. b\n4. c"),
        (item("numbered_list", n=3), "1) a\n2) b\n3) c", "- a\n- b\n- c"),
    ],
)
def test_formatting_checkers(check, good, bad):
    assert check_answer(check, good).passed is True
    assert check_answer(check, bad).passed is False


@pytest.mark.parametrize(
    "check, good, bad",
    [
        (item("answer", aliases=["Canberra"]), "The capital is Canberra.", "Sydney"),
        (item("answer", aliases=["Au"]), "Au", "Gold has no symbol I know, because"),
        (item("answer", aliases=["Leonardo", "da Vinci"]), "It was painted by Da  Vinci.", "Michelangelo"),
        (item("answer", aliases=["7", "seven"]), "There are seven continents.", "There are 17."),
    ],
)
def test_factual_checker_wants_the_answer_as_a_whole_word(check, good, bad):
    assert check_answer(check, good).passed is True
    assert check_answer(check, bad).passed is False


def answers_with_failures(failing_per_category: dict[str, int]) -> dict[str, str]:
    """Reference answers, except for the first N items of the named categories."""
    left = dict(failing_per_category)
    answers = {}
    for it in ITEMS:
        if left.get(it.category, 0) > 0:
            left[it.category] -= 1
            answers[it.id] = ""
        else:
            answers[it.id] = it.reference
    return answers


def test_scores_per_category_and_overall():
    scores = score_general_set(ITEMS, answers_with_failures({"arithmetic": 9}))
    arithmetic = scores.categories["arithmetic"]
    assert (arithmetic.n, arithmetic.passed) == (36, 27)
    assert arithmetic.score == pytest.approx(75.0)
    assert scores.categories["factual"].score == 100.0
    assert scores.overall.passed == len(ITEMS) - 9
    assert sum(1 for c in scores.items if not c.passed) == 9


def test_a_drop_over_the_threshold_is_flagged_with_the_advice_to_mix_general_data():
    base = score_general_set(ITEMS, answers_with_failures({}))
    tuned = score_general_set(ITEMS, answers_with_failures({"arithmetic": 3, "formatting": 1}))
    report = compare_with_base(tuned, base)
    drops = {d.category: d for d in report.categories}
    assert drops["arithmetic"].drop == pytest.approx(100 * 3 / 36)  # 8.3 points: over 5
    assert drops["arithmetic"].flagged is True
    assert drops["formatting"].drop == pytest.approx(100 / 24) and drops["formatting"].flagged is False
    assert report.flagged == ["arithmetic"]
    assert "10-20%" in report.advice and "arithmetic -8.3 points" in report.advice
    assert compare_with_base(tuned, base, threshold_points=10).advice is None


def test_no_drop_no_advice_and_an_improvement_is_a_negative_drop():
    base = score_general_set(ITEMS, answers_with_failures({"factual": 6}))
    tuned = score_general_set(ITEMS, answers_with_failures({}))
    report = compare_with_base(tuned, base)
    assert report.flagged == [] and report.advice is None
    assert {d.category: d.drop for d in report.categories}["factual"] == pytest.approx(-100 * 6 / 36)


def test_every_item_needs_an_answer():
    with pytest.raises(ValueError, match="no answer for 1 items: arithmetic-001"):
        score_general_set(ITEMS, {it.id: it.reference for it in ITEMS[1:]})
