"""The items of a quick eval: chat examples split into a prompt and a reference answer.

The reference is an example's last message when it is an assistant's text; the prompt is every
message before it. The file was validated by data-prep first, so parsing here is lenient: a line
that cannot be an item is skipped (and named when no line can).
"""

import json
import math
from dataclasses import dataclass, field
from typing import Any

# Default answer budget: twice the reference's tokens plus some slack, at most this.
MAX_DEFAULT_TOKENS = 512


@dataclass(frozen=True)
class EvalItem:
    index: int
    line: int  # 1-based line in the file
    prompt: list[dict[str, str]]  # chat messages: role, content (text), name when given
    reference: str

    @property
    def prompt_text(self) -> str:
        """The last user message: what a reader of the results recognises the item by."""
        return next((m["content"] for m in reversed(self.prompt) if m["role"] == "user"), "")


@dataclass
class LoadedItems:
    items: list[EvalItem] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)  # examples with no reference to compare with


def text_of(content: Any) -> str | None:
    """The text of a message's content: a string or a list of text parts; None when there is none."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return None


def split_example(messages: Any) -> tuple[list[dict[str, str]], str] | None:
    """(prompt, reference) of one example's messages, or None when it does not end with an answer."""
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    reference = text_of(last.get("content"))
    if reference is None:  # a tool call, not a text answer
        return None
    prompt = []
    for message in messages[:-1]:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return None
        entry = {"role": message["role"], "content": text_of(message.get("content")) or ""}
        if isinstance(message.get("name"), str):
            entry["name"] = message["name"]
        prompt.append(entry)
    return prompt, reference


def load_items(data: bytes, max_items: int | None = None) -> LoadedItems:
    """The eval items of a chat JSONL file in file order, the first `max_items` of them when given."""
    loaded = LoadedItems()
    for line_no, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if max_items is not None and len(loaded.items) >= max_items:
            break
        if not raw.strip():
            continue
        try:
            example = json.loads(raw)
        except ValueError:
            loaded.skipped_lines.append(line_no)
            continue
        split = split_example(example.get("messages") if isinstance(example, dict) else None)
        if split is None:
            loaded.skipped_lines.append(line_no)
            continue
        prompt, reference = split
        loaded.items.append(EvalItem(len(loaded.items), line_no, prompt, reference))
    return loaded


def estimate_tokens(text: str) -> int:
    """An over-estimate of a text's tokens (BPE tokenizers average 3-4 bytes a token).

    eval-judge carries no tokenizer; erring long only gives the model more room to answer.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)


def default_max_tokens(reference: str) -> int:
    """Room for an answer as long as the reference, twice over, capped: a wrong model stops early."""
    return min(MAX_DEFAULT_TOKENS, estimate_tokens(reference) * 2 + 16)
