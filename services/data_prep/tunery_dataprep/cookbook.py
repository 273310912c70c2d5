"""The OpenAI cookbook's format checks ("Data preparation and analysis for chat model fine-tuning"),
run on the raw JSON so that a user can compare counts with the cookbook's.

Classes and counting as there: `data_type` and `missing_messages_list` end the checks of an example;
`message_missing_key`, `message_unrecognized_key`, `unrecognized_role` and `missing_content` count
once per message (each independently); `example_missing_assistant_message` once per example.
Where the current format allows what the cookbook predates, we do not flag it: `tool` (and
`developer`) roles, `tool_calls` / `tool_call_id` / `refusal` keys, assistant messages whose
`tool_calls` or `function_call` stand in for content, and text content parts.
"""

from dataclasses import dataclass, field

from tunery_dataprep.errors import LineError
from tunery_dataprep.schema import MESSAGE_KEYS, ROLES, has_calls, has_text

# Codes in the order the cookbook reports them.
COOKBOOK_CODES = (
    "data_type",
    "missing_messages_list",
    "message_missing_key",
    "message_unrecognized_key",
    "unrecognized_role",
    "missing_content",
    "example_missing_assistant_message",
)
PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")
_ROLES = frozenset(ROLES)


@dataclass(slots=True)
class MessageFlags:
    stop: bool = False  # the example is unusable as a whole: skip the finer checks
    by_message: dict[str, set[str]] = field(default_factory=dict)  # message path → codes reported


def is_preference(obj: dict) -> bool:
    return "messages" not in obj and any(key in obj for key in PREFERENCE_KEYS)


def cookbook_errors(obj: object, line: int, fmt: str) -> tuple[list[LineError], MessageFlags]:
    errors: list[LineError] = []
    flags = MessageFlags()
    if not isinstance(obj, dict):
        flags.stop = True
        return [LineError(line, "data_type", f"expected a JSON object, got {_kind(obj)}")], flags
    if fmt == "preference":
        lists = _preference_lists(obj, line, errors, flags)
        if flags.stop:  # as a chat example without messages: nothing more to check
            return errors, flags
        answers = [m for path, msgs in lists if path != "input.messages" for m in msgs]
    else:
        messages = obj.get("messages")
        if not messages or not isinstance(messages, list):
            flags.stop = True
            what = (
                "no 'messages' list" if not messages else f"'messages' must be a list, not {_kind(messages)}"
            )
            return [LineError(line, "missing_messages_list", what, "messages")], flags
        lists = [("messages", messages)]
        answers = messages
    for path, messages in lists:
        for i, msg in enumerate(messages):
            problems = _message_problems(msg)
            if problems:
                where = f"{path}[{i}]"
                flags.by_message[where] = {code for code, _, _ in problems}
                errors.extend(
                    LineError(line, code, text, f"{where}.{key}" if key else where)
                    for code, text, key in problems
                )
    if not any(type(m) is dict and m.get("role") == "assistant" for m in answers):
        where = "messages" if fmt == "chat" else "preferred_output"
        errors.append(
            LineError(line, "example_missing_assistant_message", "example has no assistant message", where)
        )
    return errors, flags


def _preference_lists(obj: dict, line: int, errors: list[LineError], flags: MessageFlags) -> list:
    """The message lists of a preference example; a missing one is `missing_messages_list`."""
    found = []
    source = obj.get("input")
    candidates = [
        ("input.messages", source.get("messages") if isinstance(source, dict) else None),
        ("preferred_output", obj.get("preferred_output")),
        ("non_preferred_output", obj.get("non_preferred_output")),
    ]
    for path, messages in candidates:
        if not messages or not isinstance(messages, list):
            errors.append(
                LineError(line, "missing_messages_list", "a non-empty list of messages is required", path)
            )
            flags.stop = True
        else:
            found.append((path, messages))
    return found


def _message_problems(msg: object) -> list[tuple[str, str, str]]:
    """(code, message, key) of each cookbook class this message falls in; usually none, found fast."""
    if type(msg) is not dict:
        return [("data_type", f"a message must be a JSON object, not {_kind(msg)}", "")]
    role = msg.get("role")
    # The current format lets tool calls stand in for an assistant's content.
    calls = role == "assistant" and has_calls(msg)
    content = msg.get("content")
    if type(role) is str and role in _ROLES and msg.keys() <= MESSAGE_KEYS and (calls or has_text(content)):
        return []
    problems = []
    if "role" not in msg:
        problems.append(("message_missing_key", "message has no 'role'", ""))
    elif "content" not in msg and not calls:
        problems.append(("message_missing_key", "message has no 'content'", ""))
    unknown = [key for key in msg if key not in MESSAGE_KEYS]
    if unknown:
        problems.append(
            ("message_unrecognized_key", f"unrecognized key {', '.join(map(repr, unknown))}", unknown[0])
        )
    if type(role) is not str or role not in _ROLES:
        problems.append(
            (
                "unrecognized_role",
                "message has no 'role'" if role is None else f"unrecognized role {role!r}",
                "",
            )
        )
    if not calls and not has_text(content):
        problems.append(("missing_content", "message has no content", "content"))
    return problems


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )
