"""Quick-eval items: examples split into prompt and reference, and the default answer budget."""

import json

from tunery_evaljudge.items import MAX_DEFAULT_TOKENS, default_max_tokens, load_items, split_example


def msg(role: str, content, **extra) -> dict:
    return {"role": role, "content": content, **extra}


def test_reference_is_the_last_assistant_message_and_the_prompt_everything_before():
    messages = [
        msg("system", "Be brief.", name="sys"),
        msg("user", "first"),
        msg("assistant", "one"),
        msg("user", [{"type": "text", "text": "sec"}, {"type": "text", "text": "ond"}]),
        msg("assistant", [{"type": "text", "text": '{"n": 2}'}]),
    ]
    prompt, reference = split_example(messages)
    assert reference == '{"n": 2}'
    assert prompt == [
        {"role": "system", "content": "Be brief.", "name": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"},
    ]


def test_examples_without_a_final_text_answer_have_no_reference():
    assert split_example([msg("user", "hi"), msg("assistant", "hello"), msg("user", "bye")]) is None
    assert split_example([msg("assistant", "no prompt")]) is None
    tool_call = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}
    assert split_example([msg("user", "call it"), tool_call]) is None
    assert split_example("not a list") is None


def test_load_items_numbers_lines_skips_unusable_ones_and_stops_at_max_items():
    rows = [
        json.dumps({"messages": [msg("user", "a"), msg("assistant", "A")]}),
        "",
        json.dumps({"messages": [msg("user", "no answer")]}),
        "{broken",
        json.dumps({"messages": [msg("user", "b"), msg("assistant", "B")]}),
        json.dumps({"messages": [msg("user", "c"), msg("assistant", "C")]}),
    ]
    data = "\n".join(rows).encode()
    loaded = load_items(data)
    assert [(i.index, i.line, i.prompt_text, i.reference) for i in loaded.items] == [
        (0, 1, "a", "A"),
        (1, 5, "b", "B"),
        (2, 6, "c", "C"),
    ]
    assert loaded.skipped_lines == [3, 4]
    assert [i.reference for i in load_items(data, max_items=2).items] == ["A", "B"]


def test_prompt_text_is_the_last_user_message():
    turns = [msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2"), msg("assistant", "a2")]
    assert load_items(json.dumps({"messages": turns}).encode()).items[0].prompt_text == "q2"
    no_user = load_items(json.dumps({"messages": [msg("system", "s"), msg("assistant", "a")]}).encode())
    assert no_user.items[0].prompt_text == ""


def test_default_max_tokens_grows_with_the_reference_and_is_capped():
    short, longer = default_max_tokens("yes"), default_max_tokens('{"color": "blue", "size": 3}')
    assert 16 < short < longer < MAX_DEFAULT_TOKENS
    assert default_max_tokens("") == 16
    assert default_max_tokens("word " * 1000) == MAX_DEFAULT_TOKENS
