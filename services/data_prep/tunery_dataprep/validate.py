"""Validation of chat fine-tuning JSONL: one error per problem, each with its line and JSON path.

Error codes follow the OpenAI cookbook's data-prep checks (`data_type`, `missing_messages_list`,
`message_missing_key`, `message_unrecognized_key`, `unrecognized_role`, `missing_content`,
`example_missing_assistant_message`) plus our own (`invalid_json`, `empty_file`, ...).
"""

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from tunery_dataprep.schema import AssistantMessage, ChatExample

MAX_REPORTED_ERRORS = 100


@dataclass
class LineError:
    line: int
    code: str
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path + ': ' if self.path else ''}{self.message}"


@dataclass
class ParsedFile:
    examples: list[ChatExample] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # source line of each example
    errors: list[LineError] = field(default_factory=list)


ROLE_TAGS = {"system", "developer", "user", "assistant", "tool", "function"}


def _clean_loc(loc: tuple) -> tuple:
    """Drops pydantic's union markers: the role tag after a message index, `str` / `list[...]` branches."""
    out = []
    for i, part in enumerate(loc):
        if i == 2 and loc[0] == "messages" and part in ROLE_TAGS:
            continue
        if isinstance(part, str) and (part == "str" or part.startswith(("list[", "function-", "literal["))):
            continue
        out.append(part)
    return tuple(out)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _code_for(err: dict) -> str:
    loc, kind = err["loc"], err["type"]
    in_message = len(loc) >= 2 and loc[0] == "messages" and isinstance(loc[1], int)
    if not in_message:
        return "missing_messages_list" if loc[:1] == ("messages",) else "data_type"
    if kind == "union_tag_invalid":
        return "unrecognized_role"
    if kind == "union_tag_not_found":
        return "message_missing_key"
    if kind == "extra_forbidden":
        return "message_unrecognized_key"
    if kind == "missing":
        return "missing_content" if loc[-1] == "content" else "message_missing_key"
    if loc[-1] == "weight" or "weight" in loc:
        return "invalid_weight"
    if "tool_calls" in loc or "function_call" in loc:
        return "invalid_tool_call"
    return "invalid_value"


def _pydantic_errors(line: int, exc: ValidationError) -> list[LineError]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]))
        err = {**err, "loc": loc}
        code = _code_for(err)
        if code == "unrecognized_role":
            message = (
                f"unrecognized role {err['input'].get('role')!r}"
                if isinstance(err["input"], dict)
                else err["msg"]
            )
        elif code == "message_missing_key" and err["type"] == "union_tag_not_found":
            message = "message has no 'role'"
        elif code == "message_unrecognized_key":
            message = f"unrecognized key {loc[-1]!r}"
        else:
            message = err["msg"]
        errors.append(LineError(line, code, message, _path(loc)))
    return errors


def _semantic_errors(line: int, example: ChatExample) -> list[LineError]:
    errors = []
    if not any(isinstance(m, AssistantMessage) for m in example.messages):
        errors.append(
            LineError(
                line, "example_missing_assistant_message", "example has no assistant message", "messages"
            )
        )
    call_ids = set()
    for i, msg in enumerate(example.messages):
        if isinstance(msg, AssistantMessage):
            if msg.content is None and not msg.tool_calls and not msg.function_call:
                errors.append(
                    LineError(line, "missing_content", "assistant message has no content", f"messages[{i}]")
                )
            for j, call in enumerate(msg.tool_calls or []):
                call_ids.add(call.id)
                try:
                    json.loads(call.function.arguments)
                except ValueError:
                    errors.append(
                        LineError(
                            line,
                            "invalid_tool_call",
                            "function arguments are not valid JSON",
                            f"messages[{i}].tool_calls[{j}].function.arguments",
                        )
                    )
        elif msg.role == "tool" and msg.tool_call_id not in call_ids:
            errors.append(
                LineError(
                    line,
                    "unknown_tool_call_id",
                    f"tool_call_id {msg.tool_call_id!r} matches no earlier tool call",
                    f"messages[{i}].tool_call_id",
                )
            )
    return errors


def parse_chat_jsonl(data: bytes) -> ParsedFile:
    """Parses every line; valid examples and all errors (with line numbers) come back together."""
    parsed = ParsedFile()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        parsed.errors.append(
            LineError(0, "invalid_encoding", f"file is not UTF-8 ({exc.reason} at byte {exc.start})")
        )
        return parsed
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            parsed.errors.append(
                LineError(line_no, "invalid_json", f"invalid JSON: {exc.msg} (column {exc.colno})")
            )
            continue
        if not isinstance(obj, dict):
            parsed.errors.append(
                LineError(line_no, "data_type", f"expected a JSON object, got {type(obj).__name__}")
            )
            continue
        if "messages" not in obj:
            parsed.errors.append(
                LineError(line_no, "missing_messages_list", "no 'messages' list", "messages")
            )
            continue
        try:
            example = ChatExample.model_validate(obj)
        except ValidationError as exc:
            parsed.errors.extend(_pydantic_errors(line_no, exc))
            continue
        semantic = _semantic_errors(line_no, example)
        parsed.errors.extend(semantic)
        if not semantic:
            parsed.examples.append(example)
            parsed.lines.append(line_no)
    if not parsed.examples and not parsed.errors:
        parsed.errors.append(LineError(0, "empty_file", "file holds no examples"))
    return parsed
