"""Chat JSONL validation: every error names its line, its JSON path and a cookbook-style code."""

import json

from tunery_dataprep.validate import parse_chat_jsonl


def jsonl(*rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def codes(data: bytes) -> list[tuple[int, str, str]]:
    return [(e.line, e.code, e.path) for e in parse_chat_jsonl(data).errors]


def test_valid_file_has_no_errors():
    parsed = parse_chat_jsonl(jsonl(GOOD, "", GOOD))
    assert parsed.errors == []
    assert parsed.lines == [1, 3]


def test_each_error_class_points_at_line_and_path():
    data = jsonl(
        GOOD,
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x", "foo": 1}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
        {"prompt": "x", "completion": "y"},
        {"messages": [{"role": "user", "content": "x"}]},
        "{not json",
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 3}]},
        [1, 2],
    )
    assert codes(data) == [
        (2, "unrecognized_role", "messages[0]"),
        (3, "message_unrecognized_key", "messages[0].foo"),
        (4, "missing_content", "messages[0].content"),
        (5, "missing_messages_list", "messages"),
        (6, "example_missing_assistant_message", "messages"),
        (7, "invalid_json", ""),
        (8, "invalid_weight", "messages[1].weight"),
        (9, "data_type", ""),
    ]
    assert str(parse_chat_jsonl(data).errors[0]) == "line 2: messages[0]: unrecognized role 'bot'"


def test_tool_calls_are_valid_and_checked():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ok = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "assistant", "content": "done"},
        ]
    }
    bad = json.loads(json.dumps(ok))
    bad["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{"
    bad["messages"][2]["tool_call_id"] = "c9"
    assert codes(jsonl(ok)) == []
    assert codes(jsonl(bad)) == [
        (1, "invalid_tool_call", "messages[1].tool_calls[0].function.arguments"),
        (1, "unknown_tool_call_id", "messages[2].tool_call_id"),
    ]


def test_empty_and_non_utf8_files():
    assert codes(b"\n\n") == [(0, "empty_file", "")]
    assert codes(b"\xff\xfe") == [(0, "invalid_encoding", "")]
