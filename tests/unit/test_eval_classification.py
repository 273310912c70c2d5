"""The classification grader: label extraction per item, and accuracy / F1 / confusion over a run."""

import pytest
from tunery_evaljudge.graders.classification import NO_LABEL, OTHER, extract_label
from tunery_evaljudge.graders.criteria import grader_from_dict
from tunery_evaljudge.templates import Sample

LABELS = ["billing", "shipping", "account access"]


@pytest.mark.parametrize(
    "text, label",
    [
        ("billing", "billing"),
        ('  "Billing."  ', "billing"),
        ("This ticket is about SHIPPING.", "shipping"),
        ("Category: account access", "account access"),  # "access" alone is no label; the phrase is
        ("It could be billing or shipping.", None),  # two labels: no prediction
        ("The invoice is wrong.", None),
        ("rebilling", None),  # whole words only
    ],
)
def test_labels_are_extracted_from_text(text, label):
    assert extract_label(text, LABELS) == label


def test_the_longest_of_nested_label_mentions_wins():
    assert extract_label("a billing dispute", ["billing", "billing dispute"]) == "billing dispute"


def test_without_labels_the_whole_answer_is_the_label():
    assert extract_label(" Refund. ", None) == "refund"


def grader(**extra):
    config = {"type": "classification", "name": "c", "reference": "{{item.label}}", **extra}
    return grader_from_dict(config)


def test_per_item_pass_fail_from_text_and_from_a_json_field():
    text = grader(labels=LABELS)
    assert text.grade({"label": "Billing"}, Sample("billing")).passed is True
    result = text.grade({"label": "billing"}, Sample("shipping"))
    assert result.passed is False
    assert result.details == {"expected": "billing", "predicted": "shipping"}
    from_json = grader(labels=LABELS, input="{{sample.output_json.category}}")
    assert from_json.grade({"label": "shipping"}, Sample('{"category": "Shipping"}')).passed is True
    not_json = from_json.grade({"label": "shipping"}, Sample("shipping"))
    assert not_json.passed is False and not_json.details["predicted"] is None


def test_the_run_report_has_accuracy_macro_f1_per_class_and_the_confusion_matrix():
    g = grader(labels=["billing", "shipping"])
    pairs = [
        ("billing", "billing"),
        ("billing", "billing"),
        ("billing", "shipping"),
        ("shipping", "shipping"),
        ("shipping", "no idea"),  # no label
    ]
    report = g.aggregate([g.grade({"label": expected}, Sample(out)) for expected, out in pairs])
    assert report.n == 5
    assert report.accuracy == pytest.approx(3 / 5)
    billing, shipping = report.per_class["billing"], report.per_class["shipping"]
    assert (billing.precision, billing.recall, billing.support) == (1.0, pytest.approx(2 / 3), 3)
    assert (shipping.precision, shipping.recall, shipping.support) == (0.5, 0.5, 2)
    assert billing.f1 == pytest.approx(0.8) and shipping.f1 == pytest.approx(0.5)
    assert report.macro_f1 == pytest.approx((0.8 + 0.5) / 2)
    assert report.labels == ["billing", "shipping", NO_LABEL]
    assert report.confusion_matrix == [[2, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_labels_are_inferred_from_the_references_when_not_given():
    g = grader()
    pairs = [("refund", "Refund"), ("refund", "refund."), ("cancel", "cancel"), ("cancel", "upgrade")]
    report = g.aggregate([g.grade({"label": expected}, Sample(out)) for expected, out in pairs])
    assert report.labels == ["cancel", "refund", OTHER]  # "upgrade" is no expected class
    assert report.confusion_matrix == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert report.accuracy == pytest.approx(3 / 4)


def test_repeated_or_empty_labels_are_refused():
    from tunery_evaljudge.graders.base import GraderConfigError

    with pytest.raises(GraderConfigError, match="labels repeat"):
        grader(labels=["Billing", "billing"])
    with pytest.raises(GraderConfigError) as caught:
        grader(labels=["billing", " "])
    assert caught.value.param == "grader.labels"
