"""Task detection, label sets and `too_few_examples` per task (the recommendation table)."""

import json
import random

import pytest
from tunery_dataprep.quality import CheckContext, ExampleText, detect_task, run_checks, sketch_examples
from tunery_dataprep.quality.labels import find_label_sets
from tunery_dataprep.quality.task import classification_minimum

WORDS = (
    "the a to of and in on for with my your our this that it is was be can will please order account "
    "refund invoice delivery parcel charge payment card password email phone app error screen update "
    "plan price discount shipping tracking item size return store support hours warranty repair battery "
    "laptop printer network router contract bill fee receipt balance bank loan claim policy doctor clinic"
).split()


def texts(n: int, words: int = 14, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def make(rows):
    return sketch_examples(
        [ExampleText(i + 1, "Be helpful.", p, a, 100, 5, 10) for i, (p, a) in enumerate(rows)],
        context_length=4096,
    )


def classes(n_classes: int, per_class: int):
    labels = [f"class {chr(97 + c)}" for c in range(n_classes) for _ in range(per_class)]
    return make(zip(texts(len(labels)), labels, strict=True))


def too_few(train, task=None):
    warnings = run_checks(train, None, CheckContext(task, 3, 3e-6, 4096))
    return next((w for w in warnings if w.code == "too_few_examples"), None)


def test_label_sets_need_few_repeated_values():
    assert [ls.field for ls in find_label_sets(classes(3, 10))] == [None]
    short_answers = make(zip(texts(60), [f"answer {i}" for i in range(60)], strict=True))  # all distinct
    assert find_label_sets(short_answers) == []
    mostly_open = make(zip(texts(60), ["yes"] * 20 + [f"it is {i}" for i in range(40)], strict=True))
    assert find_label_sets(mostly_open) == []


def test_detects_classification():
    assert detect_task(classes(4, 20)) == "classification"
    json_labels = make(
        (p, json.dumps({"label": c, "urgent": i % 2 == 0}))
        for i, (p, c) in enumerate(zip(texts(60), ["spam", "ham", "promo"] * 20, strict=True))
    )
    assert detect_task(json_labels) == "classification"


def test_detects_extraction_and_format():
    prompts = texts(60, words=30)
    extraction = [(p, json.dumps({"who": p.split()[3], "what": " ".join(p.split()[5:8])})) for p in prompts]
    assert detect_task(make(extraction)) == "extraction"
    generated = [
        (p, json.dumps({"title": t, "tags": ["x", "y"]}))
        for p, t in zip(prompts, texts(60, 6, 9), strict=True)
    ]
    assert detect_task(make(generated)) == "format"
    markdown = [(p, "## Summary\n- one\n- two\n- three") for p in prompts]
    assert detect_task(make(markdown)) == "format"


def test_detects_summarization_tone_and_general():
    documents = texts(60, words=120)
    summaries = [(d, " ".join(d.split()[::6])) for d in documents]  # 20 of the document's words
    assert detect_task(make(summaries)) == "summarization"
    rewrites = [(p, " ".join(reversed(p.split())) + " thanks") for p in texts(60, words=20)]
    assert detect_task(make(rewrites)) == "tone"
    chat = list(zip(texts(60, words=8), texts(60, words=40, seed=5), strict=True))
    assert detect_task(make(chat)) == "general"


def test_classification_minimums_follow_the_table():
    assert classification_minimum(3).examples == 50 and classification_minimum(3).recommended == "200-500"
    assert classification_minimum(10).examples == 200 and classification_minimum(10).per_class == 20
    assert classification_minimum(15).examples == 300 and classification_minimum(15).per_class == 20
    assert 50 < classification_minimum(7).examples < 200


def test_too_few_for_a_small_classifier():
    warning = too_few(classes(3, 10))
    assert warning and warning.details["minimum"] == 50 and warning.details["n_classes"] == 3
    assert "200-500 recommended" in warning.message
    assert too_few(classes(3, 20)) is None


def test_too_few_per_class_from_ten_classes_on():
    warning = too_few(classes(12, 17))  # 204 examples, but under 20 per class
    assert warning and len(warning.details["classes_below_minimum"]) == 12
    assert len(warning.lines) == 50 and warning.details["n_lines"] == 204
    assert too_few(classes(12, 20)) is None


@pytest.mark.parametrize(("task", "minimum"), [("format", 100), ("tone", 200), ("summarization", 50)])
def test_too_few_per_task_hint(task, minimum):
    train = make(zip(texts(minimum + 10, words=20), texts(minimum + 10, words=20, seed=1), strict=True))
    warning = too_few(train[: minimum - 10], task)
    assert warning and (warning.details["task"], warning.details["minimum"]) == (task, minimum)
    assert too_few(train, task) is None
