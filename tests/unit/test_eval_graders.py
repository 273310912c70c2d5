"""Deterministic graders (string_check, json_valid, json_schema, text_similarity) and config errors."""

import pytest
from tunery_evaljudge.graders.base import GraderConfigError
from tunery_evaljudge.graders.criteria import grade_sample, grader_from_dict, graders_from_testing_criteria
from tunery_evaljudge.templates import Sample, TemplateError


def string_check(operation: str, reference: str = "{{item.label}}", **extra) -> dict:
    return {"type": "string_check", "name": "s", "reference": reference, "operation": operation, **extra}


@pytest.mark.parametrize(
    "operation, output, passed",
    [
        ("eq", "Billing", True),
        ("eq", "billing", False),
        ("ne", "billing", True),
        ("ne", "Billing", False),
        ("like", "It is Billing.", True),
        ("like", "It is billing.", False),
        ("ilike", "IT IS BILLING.", True),
        ("ilike", "It is shipping.", False),
    ],
)
def test_string_check_operations_follow_openai(operation, output, passed):
    grader = grader_from_dict(string_check(operation))
    result = grader.grade({"label": "Billing"}, Sample(output))
    assert result.passed is passed
    assert result.score == float(passed)
    assert result.details["reference"] == "Billing"


def test_string_check_on_a_json_field_fails_an_answer_that_is_not_json():
    grader = grader_from_dict(string_check("eq", input="{{sample.output_json.category}}"))
    assert grader.grade({"label": "billing"}, Sample('{"category": "billing"}')).passed is True
    result = grader.grade({"label": "billing"}, Sample("billing"))
    assert result.passed is False and "not valid JSON" in result.error


def test_string_check_refuses_an_item_without_the_referenced_field():
    grader = grader_from_dict(string_check("eq"))
    with pytest.raises(TemplateError, match="item.label"):
        grader.grade({"answer": "x"}, Sample("x"))


def test_json_valid_passes_json_and_fails_prose_with_the_parse_error():
    grader = grader_from_dict({"type": "json_valid", "name": "j"})
    assert grader.grade({}, Sample(' {"a": 1}\n')).passed is True
    result = grader.grade({}, Sample("Sure! {"))
    assert result.passed is False and result.error.startswith("not valid JSON")


SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "shipping"]},
        "items": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["category"],
}


def test_json_schema_names_the_failing_json_path_and_message():
    grader = grader_from_dict({"type": "json_schema", "name": "js", "schema": SCHEMA})
    assert grader.grade({}, Sample('{"category": "billing", "items": [1, 2]}')).passed is True
    result = grader.grade({}, Sample('{"category": "billing", "items": [1, "two"]}'))
    assert result.passed is False
    assert result.details["path"] == "$.items[1]"
    assert "'two' is not of type 'integer'" in result.details["message"]
    assert result.error.startswith("$.items[1]: ")
    missing = grader.grade({}, Sample("{}"))
    assert (
        missing.details["path"] == "$" and "'category' is a required property" in missing.details["message"]
    )


def test_json_schema_refuses_an_invalid_schema_at_load_time():
    with pytest.raises(GraderConfigError) as caught:
        grader_from_dict(
            {"type": "json_schema", "name": "js", "schema": {"type": "objekt"}}, "testing_criteria[2]"
        )
    assert caught.value.param == "testing_criteria[2].schema"
    assert "not a valid JSON Schema" in caught.value.message


def test_text_similarity_rouge_l_and_bleu_scores_and_thresholds():
    rouge = grader_from_dict(
        {
            "type": "text_similarity",
            "name": "r",
            "reference": "{{item.ref}}",
            "evaluation_metric": "rouge_l",
            "pass_threshold": 0.5,
        }
    )
    item = {"ref": "the cat sat on the mat"}
    assert rouge.grade(item, Sample("the cat sat on the mat")).score == pytest.approx(1.0)
    close = rouge.grade(item, Sample("the cat sat on a mat"))  # LCS 5 of 6 words each way
    assert close.score == pytest.approx(5 / 6) and close.passed is True
    far = rouge.grade(item, Sample("dogs run in parks"))
    assert far.score == 0.0 and far.passed is False
    bleu = grader_from_dict(
        {
            "type": "text_similarity",
            "name": "b",
            "reference": "{{item.ref}}",
            "evaluation_metric": "bleu",
            "pass_threshold": 0.9,
        }
    )
    assert bleu.grade(item, Sample("the cat sat on the mat")).score == pytest.approx(1.0)
    partial = bleu.grade(item, Sample("the cat sat on a mat"))
    assert 0 < partial.score < 1 and partial.passed is False


def test_rouge_scores_non_latin_text():
    grader = grader_from_dict(
        {
            "type": "text_similarity",
            "name": "r",
            "reference": "Привет мир",
            "evaluation_metric": "rouge_1",
            "pass_threshold": 0.5,
        }
    )
    assert grader.grade({}, Sample("привет мир")).score == pytest.approx(1.0)


@pytest.mark.parametrize(
    "config, param, message",
    [
        (string_check("equals"), "testing_criteria[1].operation", "'eq', 'ne', 'like' or 'ilike'"),
        (string_check("eq", operaton="eq"), "testing_criteria[1].operaton", "unknown field"),
        (
            {"type": "string_check", "name": "s", "operation": "eq"},
            "testing_criteria[1].reference",
            "missing",
        ),
        (string_check("eq", reference="{{item.label"), "testing_criteria[1].reference", "never closed"),
        (string_check("eq", input="{{sample.text}}"), "testing_criteria[1].input", "{{sample.text}}"),
        (
            {"type": "python", "name": "p", "source": "def grade(s, i): return 1"},
            "testing_criteria[1].type",
            "never executed",
        ),
        ({"type": "regex", "name": "r"}, "testing_criteria[1].type", "unknown grader type 'regex'"),
        ({"name": "r"}, "testing_criteria[1].type", "missing"),
        (
            {
                "type": "text_similarity",
                "name": "t",
                "reference": "x",
                "evaluation_metric": "meteor",
                "pass_threshold": 0.5,
            },
            "testing_criteria[1].evaluation_metric",
            "not supported",
        ),
        (
            {
                "type": "text_similarity",
                "name": "t",
                "reference": "x",
                "evaluation_metric": "bleu",
                "pass_threshold": 2,
            },
            "testing_criteria[1].pass_threshold",
            "less than or equal to 1",
        ),
        (
            {
                "type": "score_model",
                "name": "j",
                "model": "m",
                "input": [{"role": "user", "content": "Rate it"}],
            },
            "testing_criteria[1].input",
            "no message shows the judge the answer",
        ),
        (
            {
                "type": "score_model",
                "name": "j",
                "model": "m",
                "range": [0, 5],
                "input": [{"role": "user", "content": "{{sample.output_text}}"}],
            },
            "testing_criteria[1].range",
            "[1, 10] or [0, 1]",
        ),
        (
            {
                "type": "score_model",
                "name": "j",
                "model": "m",
                "range": [1, 10],
                "pass_threshold": 11,
                "input": [{"role": "user", "content": "{{sample.output_text}}"}],
            },
            "testing_criteria[1]",
            "outside the range 1-10",
        ),
        (
            {
                "type": "score_model",
                "name": "j",
                "model": "m",
                "input": [{"role": "judge", "content": "{{sample.output_text}}"}],
            },
            "testing_criteria[1].input[0].role",
            "'system', 'developer', 'user' or 'assistant'",
        ),
    ],
)
def test_config_errors_name_the_bad_field(config, param, message):
    with pytest.raises(GraderConfigError) as caught:
        grader_from_dict(config, "testing_criteria[1]")
    assert caught.value.param == param
    assert message in caught.value.message


def test_testing_criteria_need_distinct_names_and_a_list():
    with pytest.raises(GraderConfigError) as caught:
        graders_from_testing_criteria([string_check("eq"), string_check("ne")])
    assert caught.value.param == "testing_criteria[1].name"
    with pytest.raises(GraderConfigError) as caught:
        graders_from_testing_criteria({"type": "json_valid"})
    assert caught.value.param == "testing_criteria"


async def test_a_sample_without_an_answer_is_a_fail_that_is_not_scored():
    grader = grader_from_dict({"type": "json_valid", "name": "j"})
    result = await grade_sample(grader, {}, Sample("", error="inference: DEADLINE_EXCEEDED"))
    assert result.passed is False and result.score is None
    assert "DEADLINE_EXCEEDED" in result.error
    ok = await grade_sample(grader, {}, Sample("[1]"))
    assert ok.passed is True
