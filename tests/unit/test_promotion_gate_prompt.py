"""The prompt a promotion gate's eval run sends for each item of a chat file."""

import pytest
from tunery_common.promotion import parse_gate
from tunery_evaljudge.eval_data import DataSourceError, completions_config

CHAT = {
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
}


def prompt_of(gate: dict, item: dict) -> list[dict]:
    source = parse_gate(gate).data_source("ft:base:acme:s:ftjob-1", "file-valid")
    return completions_config(source).messages(item)


def test_the_default_prompt_leaves_out_the_reference_answer():
    prompt = prompt_of({"eval_id": "eval_1", "thresholds": {"pass_rate": 1}}, CHAT)
    assert prompt == CHAT["messages"][:2]


def test_an_item_without_a_final_assistant_message_is_the_prompt_as_it_is():
    item = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hey"},
            {"role": "user", "content": "and?"},
        ]
    }
    assert prompt_of({"eval_id": "eval_1", "thresholds": {"pass_rate": 1}}, item) == item["messages"]


def test_a_gate_that_names_its_input_messages_gets_exactly_those():
    gate = {
        "eval_id": "eval_1",
        "thresholds": {"pass_rate": 1},
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
    }
    assert prompt_of(gate, CHAT) == CHAT["messages"]


def test_drop_final_assistant_must_be_a_boolean():
    source = {
        "type": "completions",
        "model": "m",
        "source": {"type": "file_id", "id": "file-valid"},
        "input_messages": {
            "type": "item_reference",
            "item_reference": "item.messages",
            "drop_final_assistant": "yes",
        },
    }
    with pytest.raises(DataSourceError) as bad:
        completions_config(source)
    assert bad.value.param == "data_source.input_messages.drop_final_assistant"
