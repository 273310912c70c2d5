"""Bad input never crashes the report: random bytes, random JSON, mutated valid examples."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tunery_dataprep.cookbook import cookbook_errors
from tunery_dataprep.report import build_report
from tunery_dataprep.schema import CHAT
from tunery_dataprep.settings import DataPrepSettings

MODEL = "smollm2-135m-instruct"
FILE_CODES = {"empty_file", "not_enough_examples"}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{\"id\": 1}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
        {"role": "assistant", "content": "It shipped today.", "weight": 1},
    ]
}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw) -> dict:
    """The valid example with one node replaced, removed, or a key added."""
    example = json.loads(json.dumps(VALID))
    node = example
    path = draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
    for step in path[:-1]:
        children = list(node.values()) if isinstance(node, dict) else node
        containers = [c for c in children if isinstance(c, dict | list)]
        if not containers:
            break
        node = containers[step % len(containers)]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if not keys or action == "add":
        if isinstance(node, dict):
            node[draw(st.sampled_from(["role", "content", "weight", "name", "extra", "tool_calls"]))] = draw(
                json_values
            )
        else:
            node.append(draw(json_values))
    elif action == "delete":
        del node[keys[path[-1] % len(keys)]]
    else:
        node[keys[path[-1] % len(keys)]] = draw(json_values)
    return example


lines = st.one_of(
    st.binary(max_size=60),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated().map(lambda v: json.dumps(v).encode()),
    st.just(json.dumps(VALID).encode()),
)


@pytest.fixture(scope="module")
def report_settings(model_cache):
    return DataPrepSettings(model_cache=model_cache)


def check(report, n_lines: int) -> None:
    assert report.n_errors == sum(report.format_errors.values())
    assert report.n_valid_examples <= report.n_examples <= n_lines
    for error in report.errors:
        assert error.code and error.message
        if error.code in FILE_CODES:
            assert error.line == 0
        else:
            assert 1 <= error.line <= n_lines
    if report.n_errors <= len(report.errors):  # none left out: every rejected line is named
        rejected = {e.line for e in report.errors if e.code not in FILE_CODES}
        assert len(rejected) == report.n_examples - report.n_valid_examples


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes(report_settings, data):
    check(build_report(data, model=MODEL, settings=report_settings), data.count(b"\n") + 1)


@FUZZ
@given(rows=st.lists(lines, min_size=1, max_size=14))
def test_random_json_and_mutated_examples(report_settings, rows):
    data = b"\n".join(rows)
    check(build_report(data, model=MODEL, settings=report_settings), data.count(b"\n") + 1)


@settings(max_examples=400, deadline=None)
@given(
    obj=st.one_of(
        mutated(), json_values, st.builds(lambda m: {"messages": m}, st.lists(json_values, max_size=3))
    )
)
def test_what_the_schema_accepts_the_cookbook_accepts(obj):
    # The validator skips the cookbook pass for examples the schema accepts: that must lose nothing.
    try:
        CHAT.validate_python(obj)
    except ValidationError:
        return
    assert cookbook_errors(obj, 1, "chat")[0] == []
