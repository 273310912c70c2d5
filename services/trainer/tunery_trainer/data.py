"""Training files → token ids and loss labels, for chat (supervised) and preference (DPO) data.

Which tokens are trained is decided with the model's own chat template: for assistant message i,
the tokens of `template(messages[:i], add_generation_prompt=True)` are the prompt and what
`template(messages[:i+1])` adds after them is the answer. That stays correct for any template
(default system prompts, role headers) without parsing its output.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from tunery_trainer.hyperparams import DpoHyperparameters

IGNORE_INDEX = -100  # the label value cross-entropy skips


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX, or the token at the same position for trained tokens
    truncated: bool  # the oldest tokens were dropped to fit max_seq_len


@dataclass(frozen=True)
class PreferencePair:
    """One DPO example: the same prompt followed by the preferred and the non-preferred answer."""

    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated


@dataclass(frozen=True)
class TrainingData:
    train: list[TokenizedExample] | list[PreferencePair]
    valid: list[TokenizedExample] | list[PreferencePair]
    n_truncated: int  # train + valid examples whose oldest tokens were cut to fit max_seq_len
    n_skipped: int  # train + valid rows without any token to train on


def method_of(hp: Any) -> str:
    """ "supervised" or "dpo", for resolved hyperparameters or a `method.<type>.hyperparameters` model."""
    method = getattr(hp, "method", None)
    if method is None:
        method = "dpo" if isinstance(hp, DpoHyperparameters) else "supervised"
    return method


def prepare_training_data(
    model_dir: Path, train_bytes: bytes, valid_bytes: bytes | None, hp: Any
) -> TrainingData:
    """Tokenize the training (and validation) file with the model's tokenizer.

    `hp` needs `max_seq_len` and says the method (see `method_of`). Rows without any token to
    train on are skipped and counted; a training file that keeps none is a ValueError. Malformed
    rows are ValueErrors naming the file and line.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    method = method_of(hp)
    train, train_skipped = _tokenize_file(tokenizer, train_bytes, "training file", method, hp.max_seq_len)
    valid, valid_skipped = ([], 0)
    if valid_bytes:
        valid, valid_skipped = _tokenize_file(
            tokenizer, valid_bytes, "validation file", method, hp.max_seq_len
        )
    if not train:
        what = "preference pair has an answer" if method == "dpo" else "example has an assistant answer"
        raise ValueError(
            f"training file: no {what} left to train on (rows without trained assistant tokens are "
            "skipped); check the file's answers and their 'weight'"
        )
    return TrainingData(
        train=train,
        valid=valid,
        n_truncated=sum(example.truncated for example in [*train, *valid]),
        n_skipped=train_skipped + valid_skipped,
    )


def _tokenize_file(tokenizer: Any, data: bytes, what: str, method: str, max_seq_len: int) -> tuple[list, int]:
    tokenized, skipped = [], 0
    for number, row in read_jsonl(data, what):
        try:
            if method == "dpo":
                example = tokenize_preference(tokenizer, row, max_seq_len)
            else:
                messages = row.get("messages") if isinstance(row, dict) else None
                _check_messages(messages, "messages")
                example = tokenize_example(tokenizer, messages, max_seq_len)
        except (ValueError, TypeError, KeyError, TemplateError) as exc:
            raise ValueError(f"{what}, line {number}: {exc}") from None
        if example is None:
            skipped += 1
        else:
            tokenized.append(example)
    return tokenized, skipped


def read_jsonl(data: bytes, what: str = "file") -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what}: not UTF-8 text (byte {exc.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what}, line {number}: invalid JSON: {exc.msg}") from None


def load_jsonl_examples(data: bytes) -> list[dict]:
    """The examples of a chat JSONL file: one object with `messages` per non-blank line."""
    examples = []
    for number, example in read_jsonl(data):
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


def tokenize_preference(tokenizer: Any, row: Any, max_seq_len: int) -> PreferencePair | None:
    """A preference row (OpenAI's DPO format) as two sequences with labels on the answers only.

    Assistant turns inside `input.messages` are context; only `preferred_output` and
    `non_preferred_output` are scored. None when either answer has nothing left to train on.
    """
    if not isinstance(row, dict):
        raise ValueError("expected an object with 'input', 'preferred_output' and 'non_preferred_output'")
    prompt = row.get("input")
    if not isinstance(prompt, dict):
        raise ValueError("expected 'input' to be an object with a 'messages' list")
    _check_messages(prompt.get("messages"), "input.messages")
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in prompt["messages"]]
    sides = []
    for key in ("preferred_output", "non_preferred_output"):
        output = row.get(key)
        _check_messages(output, key)
        if any(m.get("role") != "assistant" for m in output):
            raise ValueError(f"'{key}' must hold assistant messages only")
        sides.append(tokenize_example(tokenizer, context + [{**m, "weight": 1} for m in output], max_seq_len))
    chosen, rejected = sides
    if chosen is None or rejected is None:
        return None
    return PreferencePair(chosen=chosen, rejected=rejected)


def _check_messages(messages: Any, field: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"expected '{field}' to be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"'{field}[{i}]' must be an object with a string 'role'")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ValueError(f"'{field}[{i}].content' must be a string or a list of content parts")


def _template_message(message: dict) -> dict:
    """Only what chat templates understand; our own keys (weight) stay out."""
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: the text ones
        content = "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
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
