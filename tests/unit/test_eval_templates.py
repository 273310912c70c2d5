"""Grader templates: item and sample references, nested fields, and errors that name the reference."""

import pytest
from tunery_evaljudge.templates import Sample, SampleFieldError, TemplateError, references, render

ITEM = {"question": "2+2?", "meta": {"lang": "en", "tags": ["math", "easy"]}, "n": 4}


def test_item_fields_nested_fields_and_list_elements_render():
    text = render("{{item.question}} ({{ item.meta.lang }}, {{item.meta.tags.1}})", ITEM)
    assert text == "2+2? (en, easy)"


def test_non_string_values_render_as_json():
    assert render("{{item.n}} {{item.meta}}", ITEM) == '4 {"lang": "en", "tags": ["math", "easy"]}'


def test_sample_output_text_and_output_json_fields_render():
    sample = Sample('{"category": "billing", "scores": [1, 2]}')
    assert render("{{sample.output_text}}", ITEM, sample) == sample.output_text
    assert render("{{sample.output_json.category}}", ITEM, sample) == "billing"
    assert render("{{sample.output_json.scores.0}}", ITEM, sample) == "1"
    assert render("{{sample.output_json}}", ITEM, sample) == '{"category": "billing", "scores": [1, 2]}'


@pytest.mark.parametrize(
    "template, named",
    [
        ("{{itm.question}}", "itm.question"),
        ("{{sample.output}}", "sample.output"),
        ("{{sample.output_text.x}}", "sample.output_text.x"),
        ("{{ question }}", "question"),
    ],
)
def test_a_reference_that_can_never_resolve_is_refused_by_name(template, named):
    with pytest.raises(TemplateError) as caught:
        references(template)
    assert caught.value.reference == named
    assert f"{{{{{named}}}}}" in str(caught.value)


def test_a_field_the_item_lacks_is_named_with_the_fields_it_has():
    with pytest.raises(TemplateError) as caught:
        render("{{item.meta.langs}}", ITEM)
    message = str(caught.value)
    assert "item.meta.langs" in message and "meta, n, question" in message


def test_an_answer_without_the_json_field_fails_the_sample_not_the_template():
    with pytest.raises(SampleFieldError, match="no field category"):
        render("{{sample.output_json.category}}", ITEM, Sample('{"label": "x"}'))
    with pytest.raises(SampleFieldError, match="not valid JSON"):
        render("{{sample.output_json.category}}", ITEM, Sample("billing"))


def test_quote_sample_wraps_only_values_from_the_sample():
    text = render(
        "Q: {{item.question}} A: {{sample.output_text}}",
        ITEM,
        Sample("4"),
        quote_sample=lambda value, ref: f"[{ref}|{value}]",
    )
    assert text == "Q: 2+2? A: [sample.output_text|4]"
