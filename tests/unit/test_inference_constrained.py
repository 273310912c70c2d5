"""Grammar-constrained JSON on the HF engine: even the tiny random Llama, whose unconstrained
output is word salad, answers with JSON that parses and validates against the schema."""

import json

import jsonschema
import pytest
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.hf import GenerationParams, HFEngine, ResponseFormat
from tunery_inference.engines.outputs import Completion, Delta

MESSAGES = [{"role": "user", "content": "Classify this ticket: my invoice is wrong."}]
# What a ticket router asks for. Strings are bounded or enumerated: a random model never chooses
# to close a free string, so only the grammar's own limits end one.
TICKET = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "technical", "account", "other"]},
        "urgent": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "customer": {
            "type": "object",
            "properties": {"tier": {"enum": ["free", "pro"]}, "score": {"type": "number", "maximum": 10}},
            "required": ["tier"],
            "additionalProperties": False,
        },
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 10}]},
    },
    "required": ["category", "urgent", "priority", "tags", "customer", "note"],
    "additionalProperties": False,
}
SEEDS = range(5)


def schema_params(schema: dict, **kwargs) -> GenerationParams:
    fmt = ResponseFormat("json_schema", json.dumps(schema))
    return GenerationParams(**{"max_tokens": 300, "response_format": fmt, **kwargs})


@pytest.fixture(scope="module")
def engine(model_cache) -> HFEngine:
    return HFEngine(ensure_base_model("tiny-random-llama", model_cache), device="cpu")


@pytest.mark.parametrize("seed", SEEDS)
def test_every_sampled_output_is_valid_json_for_the_schema(engine, seed):
    completion = engine.generate(MESSAGES, None, schema_params(TICKET, temperature=1.0, seed=seed))
    jsonschema.validate(json.loads(completion.text), TICKET)
    # The grammar ends the output as soon as the object is complete.
    assert completion.finish_reason == "stop"


def test_greedy_and_n_choices_are_valid_too(engine):
    greedy = engine.generate(MESSAGES, None, schema_params(TICKET, temperature=0))
    jsonschema.validate(json.loads(greedy.text), TICKET)
    several = engine.generate(MESSAGES, None, schema_params(TICKET, temperature=1.0, seed=99, n=2))
    assert len({c.text for c in several.choices}) == 2
    for choice in several.choices:
        jsonschema.validate(json.loads(choice.text), TICKET)


def test_the_unconstrained_model_writes_no_json(engine):
    """The control: without the grammar the same model and seeds produce nothing that parses."""
    for seed in SEEDS:
        text = engine.generate(MESSAGES, None, GenerationParams(max_tokens=40, seed=seed)).text
        with pytest.raises(ValueError):
            json.loads(text)


def test_a_constrained_stream_is_the_same_output(engine):
    params = schema_params(TICKET, temperature=0.8, seed=4, logprobs=True)
    items = list(engine.stream(MESSAGES, None, params))
    completion = items[-1]
    assert isinstance(completion, Completion) and completion == engine.generate(MESSAGES, None, params)
    assert "".join(i.text for i in items if isinstance(i, Delta)) == completion.text
    # Every sampled token had a finite logprob under the mask.
    assert all(e.logprob > float("-inf") for e in completion.choices[0].logprobs)


def test_json_object_gives_an_object(engine):
    """Any object: free keys and strings, which this model only closes when nudged (logit bias on
    the tokens that end them); the grammar still decides what may come where."""
    closing = {engine.tokenizer.convert_tokens_to_ids(t): 15.0 for t in ['"', "}"]}
    params = GenerationParams(
        max_tokens=200, temperature=1.0, logit_bias=closing, response_format=ResponseFormat("json_object")
    )
    for seed in range(4):
        params.seed = seed
        completion = engine.generate(MESSAGES, None, params)
        assert isinstance(json.loads(completion.text), dict)
        assert completion.finish_reason == "stop"


def test_enum_with_greedy_decoding_picks_a_member(engine):
    schema = {"type": "string", "enum": ["billing", "technical"]}
    completion = engine.generate(MESSAGES, None, schema_params(schema, temperature=0))
    assert json.loads(completion.text) in ("billing", "technical")


@pytest.mark.parametrize(
    ("schema_text", "message"),
    [
        ('{"type": "foo"}', "foo"),
        ('{"type": "string", "pattern": "["}', "regex"),
        ("{not json", "not valid JSON"),
        ("", "needs a schema"),
    ],
)
def test_a_schema_that_cannot_be_enforced_is_refused_before_generating(engine, schema_text, message):
    params = GenerationParams(response_format=ResponseFormat("json_schema", schema_text or None))
    with pytest.raises(RequestError) as info:
        engine.stream(MESSAGES, None, params)
    assert info.value.param == "response_format.json_schema.schema"
    assert message in info.value.message


def test_constrained_decoding_on_a_text_prompt(engine):
    params = schema_params({"type": "integer", "minimum": 0, "maximum": 999}, temperature=1.0, seed=2)
    completion = engine.generate("The answer is ", None, params)
    assert 0 <= json.loads(completion.text) <= 999
