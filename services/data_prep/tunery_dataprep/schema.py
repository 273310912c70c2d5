"""The OpenAI fine-tuning formats as pydantic-validated TypedDicts: every error gets a JSON path.

Two formats: chat (`{"messages": [...], "tools": [...]}`) and preference / DPO
(`{"input": {"messages", "tools"}, "preferred_output": [...], "non_preferred_output": [...]}`).
TypedDicts rather than models: validation is ~3x faster and leaves plain dicts, which the chat
template, the trainer and the quality sketches all take as they are.
"""

from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

_STRICT = ConfigDict(extra="forbid")
NonEmpty = Annotated[str, Field(min_length=1)]


class TextPart(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    type: Literal["text"]
    text: NonEmpty


# Empty content is the cookbook's `missing_content`: the schema refuses it too, so that an example
# the schema accepts has no cookbook error at all (the validator skips that pass for it).
Content = NonEmpty | Annotated[list[TextPart], Field(min_length=1)]


class FunctionCall(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: str
    arguments: str


class ToolCall(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: str
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    role: Literal["system", "developer"]
    content: Content
    name: NotRequired[str | None]


class UserMessage(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    role: Literal["user"]
    content: Content
    name: NotRequired[str | None]


class AssistantMessage(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    role: Literal["assistant"]
    content: NotRequired[Content | None]
    name: NotRequired[str | None]
    weight: NotRequired[Literal[0, 1] | None]  # 0: context only, not trained on
    tool_calls: NotRequired[list[ToolCall] | None]
    function_call: NotRequired[FunctionCall | None]
    refusal: NotRequired[str | None]


def has_text(content: object) -> bool:
    """Content the cookbook accepts: a non-empty string, or (current format) text parts with text."""
    if isinstance(content, str):
        return content != ""
    if isinstance(content, list):
        return any(isinstance(part, dict) and part.get("text") for part in content)
    return False


def has_calls(msg: dict) -> bool:
    """Tool calls (or a legacy function call): they stand in for an assistant message's content."""
    return bool(msg.get("tool_calls") or msg.get("function_call"))


def says_something(msg: dict) -> bool:
    return has_calls(msg) or has_text(msg.get("content"))


def _assistant_says_something(msg: dict) -> dict:
    if not says_something(msg):
        raise PydanticCustomError("cookbook", "assistant message has no content")
    return msg


def _has_assistant(messages: list[dict]) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise PydanticCustomError("cookbook", "example has no assistant message")
    return messages


class ToolMessage(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    role: Literal["function"]
    name: str
    content: Content


Message = Annotated[
    SystemMessage
    | UserMessage
    | Annotated[AssistantMessage, AfterValidator(_assistant_says_something)]
    | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]
MESSAGE_TYPES = (SystemMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage)
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Keys some message role may carry: elsewhere they are a misuse, not an unknown key.
MESSAGE_KEYS = frozenset().union(*(t.__annotations__ for t in MESSAGE_TYPES))


class ChatExample(TypedDict):
    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]  # e.g. a user's own ids
    messages: Annotated[list[Message], Field(min_length=1), AfterValidator(_has_assistant)]
    tools: NotRequired[list[dict[str, Any]] | None]
    parallel_tool_calls: NotRequired[bool | None]
    functions: NotRequired[list[dict[str, Any]] | None]


class PreferenceInput(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    messages: list[Message]
    tools: NotRequired[list[dict[str, Any]] | None]
    parallel_tool_calls: NotRequired[bool | None]


class PreferenceExample(TypedDict):
    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    input: PreferenceInput
    preferred_output: list[Message]
    non_preferred_output: list[Message]


# The validators themselves: TypeAdapter.validate_python adds a Python call per line.
CHAT = TypeAdapter(ChatExample).validator
PREFERENCE = TypeAdapter(PreferenceExample).validator


def text_of(content: object) -> str:
    """The text of a message's content: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
