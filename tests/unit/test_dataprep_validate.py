"""Line validation: every error names its line, its JSON path and a cookbook-style code."""

import json

from tunery_dataprep.validate import LineParser


def parse_all(*rows) -> list:
    parser = LineParser()
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    return [p for i, raw in enumerate(lines, 1) if (p := parser.parse(raw.encode(), i)) is not None]


def codes(*rows) -> list[tuple[int, str, str]]:
    return [(e.line, e.code, e.path) for p in parse_all(*rows) for e in p.errors]


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def test_valid_lines_have_no_errors_and_blank_lines_are_skipped():
    parsed = parse_all(GOOD, "  ", GOOD)
    assert [(p.line, p.errors) for p in parsed] == [(1, []), (3, [])]
    assert parsed[0].example["messages"][1]["content"] == "hello"


def test_each_error_class_points_at_line_and_path():
    assert codes(
        GOOD,
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x", "foo": 1}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
        {"prompt": "x", "completion": "y"},
        {"messages": [{"role": "user", "content": "x"}]},
        "{not json",
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 3}]},
        [1, 2],
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]},
        {"messages": []},
    ) == [
        (2, "unrecognized_role", "messages[0]"),
        (3, "message_unrecognized_key", "messages[0].foo"),
        (4, "message_missing_key", "messages[0]"),  # the cookbook counts both for a message without content
        (4, "missing_content", "messages[0].content"),
        (5, "missing_messages_list", "messages"),
        (6, "example_missing_assistant_message", "messages"),
        (7, "invalid_json", ""),
        (8, "invalid_weight", "messages[1].weight"),
        (9, "data_type", ""),
        (10, "missing_content", "messages[0].content"),
        (11, "missing_messages_list", "messages"),
    ]


def test_message_without_role_counts_as_missing_key_and_unrecognized_role():
    # As the cookbook counts it: one message, two classes.
    assert codes({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}) == [
        (1, "message_missing_key", "messages[0]"),
        (1, "unrecognized_role", "messages[0]"),
    ]


def test_error_text_carries_line_and_path():
    [parsed] = parse_all(
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}
    )
    assert str(parsed.errors[0]) == "line 1: messages[0]: unrecognized role 'bot'"


def test_current_tool_format_is_not_flagged():
    ok = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "use tools"},
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "assistant", "content": [{"type": "text", "text": "done"}], "weight": 1},
        ],
    }
    legacy = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "r"},
            {"role": "assistant", "content": "done", "weight": 0},
            {"role": "assistant", "content": "again"},
        ]
    }
    assert codes(ok, legacy) == []


def test_tool_calls_are_checked():
    bad = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{"}}]},
            {"role": "tool", "tool_call_id": "c9", "content": "r"},
            {"role": "assistant", "content": "y", "tool_calls": [{"id": "c2", "type": "function"}]},
            {"role": "user", "content": "z", "weight": 1},
        ]
    }
    assert codes(bad) == [
        (1, "invalid_tool_call", "messages[3].tool_calls[0].function"),
        (1, "invalid_weight", "messages[4].weight"),
    ]
    bad["messages"] = bad["messages"][:3]
    assert codes(bad) == [
        (1, "invalid_tool_call", "messages[1].tool_calls[0].function.arguments"),
        (1, "unknown_tool_call_id", "messages[2].tool_call_id"),
    ]


def test_preference_format():
    pref = {
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }
    two = {**pref, "preferred_output": pref["preferred_output"] * 2}
    no_input = {k: v for k, v in pref.items() if k != "input"}
    bad_role = {**pref, "non_preferred_output": [{"role": "robot", "content": "x"}]}
    parsed = parse_all(pref, two, no_input, bad_role, GOOD)
    assert parsed[0].errors == [] and parsed[0].example["input"]["messages"][0]["content"] == "Say hi"
    assert [(e.line, e.code, e.path) for p in parsed[1:] for e in p.errors] == [
        (2, "invalid_preference_output", "preferred_output"),
        (3, "missing_messages_list", "input.messages"),
        (4, "unrecognized_role", "non_preferred_output[0]"),
        (5, "missing_messages_list", "input.messages"),  # the first line decided the file's format
        (5, "missing_messages_list", "preferred_output"),
        (5, "missing_messages_list", "non_preferred_output"),
    ]


def test_encoding_and_bom():
    parser = LineParser()
    assert parser.parse(b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), 1).errors == []
    [error] = parser.parse(b"\xff\xfe", 2).errors
    assert (error.line, error.code) == (2, "invalid_encoding")
