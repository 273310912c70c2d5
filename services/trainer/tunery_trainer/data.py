"""Chat examples → token ids and loss labels.

Which tokens are trained is decided with the model's own chat template: for assistant message i,
the tokens of `template(messages[:i], add_generation_prompt=True)` are the prompt and what
`template(messages[:i+1])` adds after them is the answer. That stays correct for any template
(default system prompts, role headers) without parsing its output.
"""

import json
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100  # the label value cross-entropy skips


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX, or the token at the same position for trained tokens
    truncated: bool  # the oldest tokens were dropped to fit max_seq_len


def load_jsonl_examples(data: bytes) -> list[dict]:
    """The examples of a chat JSONL file: one object with `messages` per non-blank line."""
    examples = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: invalid JSON: {exc.msg}") from None
        if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
            raise ValueError(f"line {number}: expected an object with a 'messages' list")
        examples.append(example)
    return examples


def tokenize_example(tokenizer: Any, messages: list[dict], max_seq_len: int) -> TokenizedExample | None:
    """Token ids with labels on the assistant answers (None when nothing is left to train on).

    Labels cover each assistant message's content and its end-of-turn token; assistant messages
    with `"weight": 0` are context only. Tokens after the last trained one are dropped (they
    teach nothing), then, if still longer than `max_seq_len`, the oldest tokens are.
    """
    chat = [_template_message(m) for m in messages]
    input_ids = _render(tokenizer, chat)
    labels = [IGNORE_INDEX] * len(input_ids)
    special_ids = set(tokenizer.all_special_ids)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        # Common prefixes instead of plain lengths: a BPE merge across the boundary (an answer
        # starting with "\n") or a template that renders earlier turns differently then costs
        # a token at the edge, not a misaligned span.
        start = _common_prefix_len(input_ids, _render(tokenizer, chat[:i], add_generation_prompt=True))
        end = _common_prefix_len(input_ids, _render(tokenizer, chat[: i + 1]))
        end = _end_of_turn(input_ids, start, end, special_ids)
        labels[start:end] = input_ids[start:end]

    trained = [pos for pos, label in enumerate(labels) if label != IGNORE_INDEX]
    if not trained:
        return None
    input_ids, labels = input_ids[: trained[-1] + 1], labels[: trained[-1] + 1]
    truncated = len(input_ids) > max_seq_len
    if truncated:
        input_ids, labels = input_ids[-max_seq_len:], labels[-max_seq_len:]
        labels[0] = IGNORE_INDEX  # nothing precedes the first token to predict it from
        if all(label == IGNORE_INDEX for label in labels):
            return None
    return TokenizedExample(input_ids=input_ids, labels=labels, truncated=truncated)


def _template_message(message: dict) -> dict:
    """Only what chat templates understand; our own keys (weight) stay out."""
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: the text ones
        content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    out = {"role": message["role"], "content": content or ""}
    if message.get("name"):
        out["name"] = message["name"]
    return out


def _render(tokenizer: Any, chat: list[dict], add_generation_prompt: bool = False) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            chat, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
        )
    )


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _end_of_turn(ids: list[int], start: int, end: int, special_ids: set[int]) -> int:
    """End the span just after its last special token (`<|im_end|>`), dropping the template's
    newline after it: generation stops at the end-of-turn token, nothing after it is produced."""
    for pos in range(end - 1, start - 1, -1):
        if ids[pos] in special_ids:
            return pos + 1
    return end
