"""Every quality warning: a dataset that must trigger it, a close one that must not, and its advice."""

import json
import random

import pytest
from tunery_dataprep.quality import (
    CheckContext,
    ExampleText,
    QualityWarning,
    recommendations,
    run_checks,
    sketch_examples,
)
from tunery_dataprep.quality.recommendations import ADVICE

WORDS = (
    "account order refund invoice delivery package charge payment card password login email address "
    "phone app crash error screen update version plan upgrade cancel subscription price discount coupon "
    "shipping tracking number late damaged missing wrong item size colour return exchange store branch "
    "manager support agent chat call hours weekend holiday warranty repair battery charger cable device "
    "laptop tablet printer ink paper scanner network router signal slow speed contract bill fee tax "
    "receipt statement balance credit transfer bank loan insurance claim policy doctor appointment clinic "
    "please help why when where how can could would my your the a an to for with from on in at of and"
).split()
CTX = CheckContext(task=None, n_epochs=3, training_usd_per_token=3e-6, context_length=4096)


def texts(n: int, words: int = 14, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def make(rows, *, system: str | None = "You are the support agent of Acme.", first_line: int = 1, **tokens):
    """Sketches of (prompt, answer) or (prompt, answer, system) rows, numbered from `first_line`."""
    counts = {"n_tokens": 120, "n_system_tokens": 10, "n_assistant_tokens": 20} | tokens
    return sketch_examples(
        [
            ExampleText(first_line + i, row[2] if len(row) > 2 else system, row[0], row[1], **counts)
            for i, row in enumerate(rows)
        ],
        context_length=CTX.context_length,
    )


def found(warnings: list[QualityWarning], code: str) -> QualityWarning | None:
    matches = [w for w in warnings if w.code == code]
    assert len(matches) <= 1
    return matches[0] if matches else None


def check(train, valid=None, ctx: CheckContext = CTX) -> list[QualityWarning]:
    return run_checks(train, valid, ctx)


def labelled(counts: dict[str, int], seed: int = 0) -> list[tuple[str, str]]:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return list(zip(texts(len(labels), seed=seed), labels, strict=True))


def test_class_imbalance_190_5_5_names_the_small_classes():
    warning = found(check(make(labelled({"billing": 190, "refund": 5, "other": 5}))), "class_imbalance")
    assert warning and warning.severity == "warning"
    assert warning.details["counts"] == {"billing": 190, "refund": 5, "other": 5}
    assert warning.details["min_per_class"] == 17  # 50 examples minimum for 2-5 classes, over 3 classes
    assert warning.details["field"] is None
    assert warning.lines == list(range(191, 201))
    assert "'refund' (5), 'other' (5)" in warning.message


def test_balanced_four_classes_are_not_imbalanced():
    warnings = check(make(labelled({"billing": 50, "refund": 50, "shipping": 50, "other": 50})))
    assert found(warnings, "class_imbalance") is None


def test_class_imbalance_in_a_json_field():
    categories = ["billing"] * 150 + ["refund"] * 10
    rows = [
        (prompt, json.dumps({"category": category, "reply": f"{prompt} answered"}))
        for prompt, category in zip(texts(160), categories, strict=True)
    ]
    warning = found(check(make(rows)), "class_imbalance")
    assert warning and warning.details["field"] == "category"
    assert warning.details["counts"] == {"billing": 150, "refund": 10}


def test_duplicate_examples_ignore_case_punctuation_and_spacing():
    rows = labelled({"billing": 30, "refund": 30})
    copies = [(rows[0][0].upper() + "!", rows[0][1] + "."), (rows[5][0], rows[5][1])]
    warning = found(check(make(rows + copies)), "duplicate_examples")
    assert warning and warning.lines == [61, 62]
    assert warning.details["pairs"] == [[61, 1], [62, 6]]


def test_same_prompt_with_another_system_prompt_is_no_duplicate():
    rows = labelled({"billing": 30, "refund": 30})
    warnings = check(make([*rows, (rows[0][0], rows[0][1], "You are a pirate.")]))
    assert found(warnings, "duplicate_examples") is None


def long_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    return list(zip(texts(n, words=30, seed=seed), texts(n, words=20, seed=seed + 1), strict=True))


def one_word_changed(text: str) -> str:
    words = text.split()
    return " ".join([*words[:-1], "zebra"])


def test_near_duplicates_differ_by_a_word():
    rows = long_rows(60)
    warnings = check(make([*rows, (one_word_changed(rows[3][0]), rows[3][1])]))
    warning = found(warnings, "near_duplicates")
    assert warning and warning.lines == [61]
    assert warning.details["groups"] == [[4, 61]]
    assert found(warnings, "duplicate_examples") is None


def test_same_prompt_with_a_different_answer_is_not_a_near_duplicate():
    rows = long_rows(60)
    warnings = check(make([*rows, (rows[3][0], texts(1, words=20, seed=99)[0])]))
    assert found(warnings, "near_duplicates") is None


def test_train_validation_overlap_exact_and_near():
    rows = long_rows(60)
    valid_rows = [*long_rows(8, seed=50), (rows[0][0].upper(), "x"), (one_word_changed(rows[1][0]), "y")]
    warning = found(check(make(rows), make(valid_rows)), "train_validation_overlap")
    assert warning and warning.lines == [9, 10]
    assert (warning.details["n_exact"], warning.details["n_near"]) == (1, 1)
    assert warning.details["pairs"] == [[9, 1], [10, 2]]


def test_fresh_validation_prompts_do_not_overlap():
    warnings = check(make(long_rows(60)), make(long_rows(10, seed=50)))
    assert found(warnings, "train_validation_overlap") is None


def test_inconsistent_labels_for_the_same_prompt():
    rows = labelled({"billing": 50, "refund": 50, "shipping": 50, "other": 50})
    conflict = (rows[0][0] + "!", "refund")  # line 1 says billing
    warning = found(check(make([*rows, conflict])), "inconsistent_labels")
    assert warning and warning.lines == [1, 201]
    assert warning.details["groups"] == [{"lines": [1, 201], "labels": {"billing": 1, "refund": 1}}]


def test_same_label_or_another_system_prompt_is_consistent():
    rows = labelled({"billing": 50, "refund": 50, "shipping": 50, "other": 50})
    extra = [(rows[0][0], "billing"), (rows[1][0], "refund", "You route tickets for the legal team.")]
    assert found(check(make([*rows, *extra])), "inconsistent_labels") is None


TEMPLATES = [
    "Hello, could you please tell me what the current price of the {} {} is in your online store today?",
    "I would like to know whether the {} {} is still available for delivery to my address this week.",
    "Can I return the {} {} that I bought last month if I still have the original receipt with me?",
]
COLOURS = ["red", "blue", "green", "black", "white", "grey", "pink", "orange", "yellow", "purple"]
ITEMS = ["jacket", "lamp", "chair", "kettle", "backpack", "phone case", "desk", "mug", "scarf", "bicycle"]


def test_low_diversity_finds_the_templates():
    prompts = [t.format(c, i) for t in TEMPLATES for c in COLOURS for i in ITEMS[:4]]
    rows = [(p, a) for p, a in zip(prompts, texts(len(prompts), seed=3), strict=True)]
    warning = found(check(make(rows)), "low_diversity")
    assert warning and warning.details["n_templates"] == 3
    assert [t["n_examples"] for t in warning.details["largest_templates"]] == [40, 40, 40]


def test_varied_prompts_are_diverse():
    assert found(check(make(long_rows(120))), "low_diversity") is None


def test_system_message_missing_everywhere_is_info():
    warning = found(check(make(long_rows(60), system=None)), "missing_system_message")
    assert warning and warning.severity == "info" and warning.lines == []


def test_system_message_missing_in_some_examples():
    rows = [(p, a, None if i % 10 == 0 else "Be kind.") for i, (p, a) in enumerate(long_rows(60))]
    warnings = check(make(rows))
    warning = found(warnings, "missing_system_message")
    assert warning and warning.severity == "warning" and warning.lines == [1, 11, 21, 31, 41, 51]
    assert found(check(make(long_rows(60))), "missing_system_message") is None


def test_inconsistent_system_prompt_flags_the_odd_variants():
    rows = [(p, a, "Be brief." if i in (4, 9) else "Be kind.") for i, (p, a) in enumerate(long_rows(60))]
    warning = found(check(make(rows)), "inconsistent_system_prompt")
    assert warning and warning.lines == [5, 10]
    assert (warning.details["n_variants"], warning.details["n_dominant"]) == (1, 58)


def test_two_personas_half_and_half_are_deliberate():
    rows = [(p, a, "Be brief." if i % 2 else "Be kind.") for i, (p, a) in enumerate(long_rows(60))]
    assert found(check(make(rows)), "inconsistent_system_prompt") is None


def test_long_system_prompt_with_its_cost_over_the_run():
    train = make(long_rows(100), n_tokens=500, n_system_tokens=400, n_assistant_tokens=40)
    warning = found(check(train), "long_system_prompt")
    assert warning and warning.details["share"] == 0.8
    assert warning.details["usd"] == pytest.approx(400 * 100 * 3 * 3e-6)
    assert "$0.36 of $0.45" in warning.message


def test_a_short_system_prompt_is_fine():
    train = make(long_rows(100), n_tokens=500, n_system_tokens=40, n_assistant_tokens=40)
    assert found(check(train), "long_system_prompt") is None


def test_truncated_examples_over_the_context():
    rows = long_rows(60)
    train = make(rows[:2]) + make(rows[2:3], first_line=3, n_tokens=5000) + make(rows[3:], first_line=4)
    warning = found(check(train), "truncated_examples")
    assert warning and warning.lines == [3]
    assert (warning.details["max_tokens"], warning.details["context_length"]) == (5000, 4096)
    assert found(check(make(rows, n_tokens=4096)), "truncated_examples") is None


FACTS = [
    "The Pro plan costs $49 a month and the Basic plan $19.",
    "We are open 9am to 6pm Monday to Friday.",
    "The sale ends on March 31, 2025.",
    "There are 12 units in stock at the Oslo store.",
    "Delivery to Berlin takes 3 days and costs €4.90.",
]


def test_factual_content_when_answers_state_prices_dates_and_stock():
    rows = [(prompt, FACTS[i % len(FACTS)]) for i, prompt in enumerate(texts(60))]
    warning = found(check(make(rows)), "factual_content")
    assert warning and warning.details["share"] == 1.0
    assert warning.details["examples_per_kind"]["money"] == 24
    assert "RAG" in warning.message


def test_a_classifier_quoting_the_date_of_its_ticket_is_not_factual():
    rows = []
    for i, prompt in enumerate(texts(80)):
        date = f"2024-03-{i % 28 + 1:02d}"
        label = ["billing", "refund", "shipping", "other"][i % 4]
        rows.append((f"{prompt} (sent {date})", f"{label}, ticket of {date}" if i % 2 else label))
    assert found(check(make(rows)), "factual_content") is None


def test_a_price_here_and_there_in_long_answers_is_not_factual():
    pairs = zip(texts(60), texts(60, words=60, seed=7), strict=True)
    rows = [(p, a + (" It costs $20." if i % 2 else "")) for i, (p, a) in enumerate(pairs)]
    assert found(check(make(rows)), "factual_content") is None


def test_lines_are_capped_and_the_message_says_how_many_more():
    rows = long_rows(60)
    train = make(rows, n_tokens=5000)
    warning = found(check(train), "truncated_examples")
    assert warning.lines == list(range(1, 51))
    assert "and 10 more" in warning.message and warning.details["n_lines"] == 60


def test_unknown_task_hint_is_refused():
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        check(make(long_rows(5)), ctx=CheckContext("poetry", 3, 0.0, 4096))


def test_empty_training_set_only_has_too_few_examples():
    assert [w.code for w in check([])] == ["too_few_examples"]


# Recommendations: one action per warning, plus what every fine-tune needs.

CODES = {
    "class_imbalance", "duplicate_examples", "near_duplicates", "train_validation_overlap",
    "inconsistent_labels", "low_diversity", "too_few_examples", "missing_system_message",
    "inconsistent_system_prompt", "long_system_prompt", "truncated_examples", "factual_content",
}  # fmt: skip


def test_every_warning_code_has_advice():
    assert set(ADVICE) == CODES


def test_recommendations_for_an_imbalanced_classifier():
    train = make(labelled({"billing": 190, "refund": 5, "other": 5}))
    advice = recommendations(train, check(train), CTX)
    assert advice[0].startswith("Balance the classes: add examples of 'refund', 'other' (at least 17 each")
    assert any("tunery data split" in a and "validation" in a for a in advice)
    assert any("10x the data (~2,000 examples)" in a for a in advice)
    assert any("10-20% general-purpose examples" in a and "tunery data mix" in a for a in advice)
    assert advice[-1].startswith("The checks assumed a classification task")


def test_recommendations_cover_each_warning_of_a_bad_file():
    rows = [(prompt, FACTS[i % len(FACTS)]) for i, prompt in enumerate(texts(40))]
    rows += [rows[0], (rows[1][0], rows[1][1], None)]
    train = make(rows, n_tokens=5000, n_system_tokens=4000, n_assistant_tokens=30)
    valid = make(rows[2:4])
    warnings = check(train, valid)
    codes = {w.code for w in warnings}
    assert codes >= {
        "duplicate_examples",
        "train_validation_overlap",
        "too_few_examples",
        "truncated_examples",
    }
    assert codes >= {"missing_system_message", "long_system_prompt", "factual_content"}
    advice = recommendations(train, warnings, CTX, valid=valid)
    assert len(advice) == len(codes) + 3  # 10x rule, general-purpose mix, detected task
    assert not any("tunery data split" in a and "Hold out" in a for a in advice)  # it has a validation file
    assert any("retrieval (RAG)" in a for a in advice)
