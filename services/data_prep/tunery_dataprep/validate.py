"""Validation of one JSONL line (chat or preference format): each error has its line and JSON path.

Three layers, each the only place for its errors:
- `cookbook.py` runs the OpenAI cookbook's checks on the raw JSON, so that the counts of
  `data_type`, `missing_messages_list`, `message_missing_key`, ... equal the cookbook's;
- the pydantic models (schema.py) catch the rest (weight, tool calls, types), mapped here to our
  own codes; what the cookbook layer already reported for a message is not reported twice;
- semantic checks on a valid example: tool-call arguments, tool_call_id, the preference outputs.
The schema also refuses everything the cookbook flags, so a chat line it accepts (most lines)
needs no cookbook pass: that pass only runs to explain a rejected line.
"""

import json
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from tunery_dataprep.cookbook import MessageFlags, cookbook_errors, is_preference
from tunery_dataprep.errors import LineError, json_path
from tunery_dataprep.schema import CHAT, MESSAGE_KEYS, PREFERENCE, ROLES

# Lists of messages in either format: a role tag pydantic adds after their index is no path part.
_MESSAGE_LISTS = ("messages", "preferred_output", "non_preferred_output")
_BRANCHES = ("str", "constrained-str")  # the union branches pydantic names in locations


@dataclass(slots=True)
class ParsedLine:
    line: int
    example: dict | None  # the validated example; None when the line has errors
    errors: list[LineError] = field(default_factory=list)


class LineParser:
    """Parses the lines of one file; the first JSON object decides its format."""

    def __init__(self) -> None:
        self.format: str | None = None  # "chat" | "preference"

    def parse(self, raw: bytes, line: int) -> ParsedLine | None:
        """The example on this line and its errors; None for a blank line."""
        try:
            obj = orjson.loads(raw)  # the usual case, 2-3x faster than json; anything odd goes below
        except orjson.JSONDecodeError:
            if not raw.strip():
                return None
            obj = _standard_json(raw, line)
            if isinstance(obj, ParsedLine):
                return obj
        if self.format is None and isinstance(obj, dict):
            self.format = "preference" if is_preference(obj) else "chat"
        return parse_object(obj, line, self.format or "chat")


def _standard_json(raw: bytes, line: int) -> object:
    """The line's JSON as the standard library reads it (NaN, huge numbers, a BOM on line 1), or
    the ParsedLine of its encoding or syntax error."""
    try:
        text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 ({exc.reason} at byte {exc.start})"
        return ParsedLine(line, None, [LineError(line, "invalid_encoding", why)])
    text = text.rstrip("\r\n")  # a broken line then reads "unterminated string", not "control character"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        why = "invalid JSON: nested too deep"
    return ParsedLine(line, None, [LineError(line, "invalid_json", why)])


def parse_object(obj: object, line: int, fmt: str) -> ParsedLine:
    if fmt == "chat":
        # The schema refuses whatever the cookbook flags (a property test holds it to that), so
        # an example it accepts skips the cookbook pass: most lines of most files.
        try:
            example = CHAT.validate_python(obj)
        except (ValidationError, RecursionError):
            pass
        else:
            errors = _semantic_errors(line, example, fmt)
            return ParsedLine(line, None if errors else example, errors)
    errors, flags = cookbook_errors(obj, line, fmt)
    if errors and flags.stop:
        return ParsedLine(line, None, errors)
    try:
        example = (PREFERENCE if fmt == "preference" else CHAT).validate_python(obj)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(line, exc, flags))
        if not errors:  # never reject a line without saying why
            first = exc.errors(include_url=False)[0]
            loc = _clean_loc(tuple(first["loc"]))
            errors.append(LineError(line, _code_for(first, loc), first["msg"], json_path(loc)))
        return ParsedLine(line, None, errors)
    except RecursionError:
        errors.append(LineError(line, "invalid_value", "the example is nested too deep"))
        return ParsedLine(line, None, errors)
    errors.extend(_semantic_errors(line, example, fmt))
    return ParsedLine(line, None if errors else example, errors)


def _clean_loc(loc: tuple) -> tuple:
    """Drops pydantic's union markers: the role tag after a message index, `str` / `list[...]` branches."""
    out: list = []
    for part in loc:
        if part in ROLES and len(out) >= 2 and isinstance(out[-1], int) and out[-2] in _MESSAGE_LISTS:
            continue
        if isinstance(part, str) and (
            part in _BRANCHES or part.startswith(("list[", "dict[", "function-", "literal["))
        ):
            continue
        out.append(part)
    return tuple(out)


def _split_at_message(loc: tuple) -> tuple[str | None, tuple]:
    """(path of the message an error lies in, e.g. `input.messages[2]`, the location inside it)."""
    for i, part in enumerate(loc[:-1]):
        if part in _MESSAGE_LISTS and isinstance(loc[i + 1], int):
            return json_path(loc[: i + 2]), loc[i + 2 :]
    return None, loc


def _covered(err: dict, loc: tuple, flags: MessageFlags) -> bool:
    """True when the cookbook layer already reported this problem of the message."""
    if err["type"] == "cookbook":  # the schema's own copy of a cookbook rule
        return True
    message, inside = _split_at_message(loc)
    if message is None:
        return False
    codes = flags.by_message.get(message, ())
    if "data_type" in codes or err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return True
    if err["type"] == "extra_forbidden" and loc[-1] not in MESSAGE_KEYS:
        return True  # message_unrecognized_key
    return inside[:1] == ("content",) and "missing_content" in codes


def _code_for(err: dict, loc: tuple) -> str:
    if "weight" in loc:
        return "invalid_weight"
    if any(key in loc for key in ("tool_calls", "function_call", "tool_call_id")):
        return "invalid_tool_call"
    return "invalid_value"


def _pydantic_errors(line: int, exc: ValidationError, flags: MessageFlags) -> list[LineError]:
    found: dict[str, LineError] = {}  # by path: union branches failing at one place say it once
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]))
        if _covered(err, loc, flags):
            continue
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"{loc[-1]!r} is not allowed here" + (
                " (only assistant messages carry a weight)" if loc[-1] == "weight" else ""
            )
        path = json_path(loc)
        found.setdefault(path, LineError(line, _code_for(err, loc), message, path))
    # The deepest failure is the most precise: `content[0].type`, not "content should be a string".
    paths = list(found)
    return [
        e for p, e in found.items() if not any(q != p and q.startswith((p + ".", p + "[")) for q in paths)
    ]


def _semantic_errors(line: int, example: dict, fmt: str) -> list[LineError]:
    if fmt == "preference":
        errors = _tool_errors(line, example["input"]["messages"], "input.messages")
        for key in ("preferred_output", "non_preferred_output"):
            output = example[key]
            if len(output) != 1 or output[0]["role"] != "assistant":
                errors.append(
                    LineError(
                        line, "invalid_preference_output", "must hold exactly one assistant message", key
                    )
                )
        return errors
    return _tool_errors(line, example["messages"], "messages")


def _tool_errors(line: int, messages: list[dict], path: str) -> list[LineError]:
    """Tool calls with JSON arguments, and tool results that answer an earlier call."""
    errors = []
    call_ids: set[str] = set()
    for i, msg in enumerate(messages):
        calls = msg.get("tool_calls")
        if calls:
            for j, call in enumerate(calls):
                call_ids.add(call["id"])
                try:
                    json.loads(call["function"]["arguments"])
                except (ValueError, RecursionError):
                    errors.append(
                        LineError(
                            line,
                            "invalid_tool_call",
                            "function arguments are not valid JSON",
                            f"{path}[{i}].tool_calls[{j}].function.arguments",
                        )
                    )
        elif msg["role"] == "tool" and msg["tool_call_id"] not in call_ids:
            errors.append(
                LineError(
                    line,
                    "unknown_tool_call_id",
                    f"tool_call_id {msg['tool_call_id']!r} matches no earlier tool call",
                    f"{path}[{i}].tool_call_id",
                )
            )
    return errors
