"""What the quality checks keep of each example: a few hundred bytes, never the raw text.

Sketches are built in batches (`sketch_examples`): the per-example work is a handful of C-speed
string operations, and the MinHash arithmetic runs once per batch in numpy.
"""

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tunery_dataprep.quality.facts import volatile_facts
from tunery_dataprep.quality.minhash import NUM_PERM, low_bits, signatures
from tunery_dataprep.quality.words import normalise, shared_percent, split_words

ANSWER_PERM = 32  # values of the answer's signature: it only has to tell same from different
PROMPT_SIG = slice(0, NUM_PERM)
ANSWER_SIG = slice(NUM_PERM, NUM_PERM + ANSWER_PERM)

MAX_LABEL_WORDS = 4
MAX_LABEL_CHARS = 40
MAX_FIELDS = 8  # JSON fields kept per answer
_STRUCTURED_LINE = re.compile(r"^\s*(?:[-*|#>]|\d+[.)])", re.MULTILINE)


@dataclass(slots=True)
class ExampleSketch:
    line: int
    system_hash: int  # 0: no system message
    prompt_hash: int  # of the prompt's words: case, punctuation and spacing ignored
    answer_hash: int  # of the answer's words, the same way (so "Billing." equals "billing")
    signature: bytes  # 16-bit MinHash values: NUM_PERM of the prompt, then ANSWER_PERM of the answer
    kind: str  # the answer: "label" (a few words), "json", "structured" (markdown, code), "text"
    label: str | None  # the normalised answer when kind == "label"
    fields: tuple[tuple[str, str | None], ...]  # a JSON-object answer's fields: short scalars normalised
    prompt_words: int
    answer_words: int
    copy_pct: int  # share of the answer's distinct words that the prompt contains, 0..100
    novel_facts: int  # volatile facts (prices, dates, ...) the answer states and the prompt lacks
    fact_kinds: int  # bitmask over facts.KIND_BITS
    n_tokens: int
    n_system_tokens: int
    n_assistant_tokens: int
    truncated: bool  # n_tokens over the model's context length


@dataclass(slots=True, frozen=True)
class ExampleText:
    """One example as `sketch_examples` takes it (see `sketch_example` for the fields)."""

    line: int
    system_text: str | None
    prompt_text: str
    answer_text: str
    n_tokens: int = 0
    n_system_tokens: int = 0
    n_assistant_tokens: int = 0


def sketch_example(
    *,
    line: int,
    system_text: str | None,
    prompt_text: str,
    answer_text: str,
    n_tokens: int,
    n_system_tokens: int,
    n_assistant_tokens: int,
    context_length: int,
) -> ExampleSketch:
    """One example's sketch. Prefer `sketch_examples`: numpy's per-call overhead makes a lone sketch
    cost about a millisecond, against some 20-40 µs an example in batches of a few hundred.

    prompt_text: the user (and tool) message texts joined with "\\n"; answer_text: the assistant
    texts joined; system_text: the first system message, None when there is none.
    """
    text = ExampleText(
        line, system_text, prompt_text, answer_text, n_tokens, n_system_tokens, n_assistant_tokens
    )
    return sketch_examples([text], context_length=context_length)[0]


def sketch_examples(examples: Sequence[ExampleText], *, context_length: int) -> list[ExampleSketch]:
    if not examples:
        return []
    prompts: list[bytes] = []
    answers: list[bytes] = []
    per_example = []  # what needs Python string work, example by example
    for ex in examples:
        prompt_cf, answer_cf = ex.prompt_text.casefold(), ex.answer_text.casefold()
        prompts.append(normalise(prompt_cf))
        answers.append(normalise(answer_cf))
        form = _answer_form(ex.answer_text, answers[-1])
        per_example.append((ex, form, volatile_facts(answer_cf, prompt_cf)))

    n = len(examples)
    prompt_words, answer_words = split_words(prompts), split_words(answers)
    prompt_sig = signatures(prompt_words.shingle_hashes(), prompt_words.window_text, n)
    answer_sig = signatures(answer_words.shingle_hashes(), answer_words.window_text, n, num_perm=ANSWER_PERM)
    both = low_bits(np.hstack([prompt_sig, answer_sig]))
    columns = zip(
        per_example,
        prompts,
        answers,
        prompt_words.lengths.tolist(),
        answer_words.lengths.tolist(),
        shared_percent(answer_words, prompt_words),
        both,
        strict=True,
    )
    return [
        ExampleSketch(
            line=ex.line,
            system_hash=_system_hash(ex.system_text),
            prompt_hash=_hash64(prompt),
            answer_hash=_hash64(answer),
            signature=sig.tobytes(),
            kind=kind,
            label=label,
            fields=fields,
            prompt_words=n_prompt_words,
            answer_words=n_answer_words,
            copy_pct=copy_pct,
            novel_facts=novel_facts,
            fact_kinds=fact_kinds,
            n_tokens=ex.n_tokens,
            n_system_tokens=ex.n_system_tokens,
            n_assistant_tokens=ex.n_assistant_tokens,
            truncated=ex.n_tokens > context_length,
        )
        for (
            (ex, (kind, label, fields), (novel_facts, fact_kinds)),
            prompt,
            answer,
            n_prompt_words,
            n_answer_words,
            copy_pct,
            sig,
        ) in columns
    ]


def signature_matrix(sketches: Sequence[ExampleSketch]) -> np.ndarray:
    """The sketches' signatures as one (n, NUM_PERM + ANSWER_PERM) uint16 matrix."""
    width = NUM_PERM + ANSWER_PERM
    return np.frombuffer(b"".join(s.signature for s in sketches), dtype=np.uint16).reshape(-1, width)


def example_texts(messages: list[dict]) -> tuple[str | None, str, str]:
    """(first system message, user and tool texts, trained assistant texts) of chat messages.

    Assistant tool calls count as answer text (name and arguments); assistant turns with weight 0
    are context, so they count as prompt.
    """
    system: str | None = None
    prompt: list[str] = []
    answer: list[str] = []
    for message in messages:
        role, text = message.get("role"), _content_text(message.get("content"))
        if role in ("system", "developer"):
            system = text if system is None else system
        elif role == "assistant" and message.get("weight", 1) != 0:
            calls = message.get("tool_calls") or []
            answer.append(" ".join([text, *(_call_text(call) for call in calls)]).strip())
        else:
            prompt.append(text)
    return system, "\n".join(prompt), "\n".join(answer)


def _content_text(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _call_text(call) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return ""
    return f"{function.get('name', '')} {function.get('arguments', '')}"


def _answer_form(answer: str, normalised: bytes) -> tuple[str, str | None, tuple]:
    """(kind, label, JSON fields) of an answer."""
    stripped = answer.strip()
    if len(stripped) <= MAX_LABEL_CHARS and "\n" not in stripped and normalised:
        if normalised.count(b" ") < MAX_LABEL_WORDS:
            return "label", sys.intern(normalised.decode("utf-8", "surrogatepass")), ()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            return "json", None, _label_fields(parsed) if isinstance(parsed, dict) else ()
    if "```" in stripped or ("\n" in stripped and len(_STRUCTURED_LINE.findall(stripped)) >= 3):
        return "structured", None, ()
    return "text", None, ()


def _label_fields(obj: dict) -> tuple[tuple[str, str | None], ...]:
    """The first fields of a JSON object: short scalar values normalised (label candidates), others None.

    Keys and values are interned: label values repeat across examples, so they are stored once.
    """
    fields = []
    for key, value in list(obj.items())[:MAX_FIELDS]:
        text = str(value).casefold().strip() if isinstance(value, bool | int | str) else None
        if text is not None and (len(text) > MAX_LABEL_CHARS or "\n" in text):
            text = None
        fields.append((sys.intern(str(key)[:MAX_LABEL_CHARS]), None if text is None else sys.intern(text)))
    return tuple(fields)


@lru_cache(maxsize=256)  # most files repeat one system prompt: hash it once
def _system_hash(system_text: str | None) -> int:
    collapsed = " ".join((system_text or "").split())
    if not collapsed:
        return 0
    return _hash64(collapsed.encode("utf-8", "surrogatepass")) or 1  # 0 stays "no system message"


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
