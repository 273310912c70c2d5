"""Token counts of examples with the target model's own tokenizer and chat template.

`total` is what the model reads (the rendered conversation, as the trainer renders it); `trained`
is what carries loss: each assistant answer without `weight: 0` plus its end-of-turn token, the
span the trainer labels (tunery_trainer/data.py).
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from tunery_common.basemodels import tokenizer_dir

from tunery_dataprep.render import Plan, TemplateRenderer
from tunery_dataprep.schema import text_of
from tunery_dataprep.tokencount import TokenCounter

SYSTEM_ROLES = ("system", "developer")
MAX_SHAPES = 4096  # conversation shapes (roles, names, empty contents, weights) kept compiled


@dataclass(slots=True)
class ExampleTokens:
    total: int  # every sequence of the example (a preference example has two)
    trained: int
    system: int  # of the system prompt's content
    longest: int  # the longest single sequence, what must fit the context


def is_trained(msg: dict) -> bool:
    return msg["role"] == "assistant" and msg.get("weight") != 0


@lru_cache(maxsize=4)
def load_tokenizer(model: str, cache_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir(model, cache_dir))


class _Slot(NamedTuple):  # a tuple: the hot loop unpacks it
    message: int  # whose content goes here
    check_before: Callable[[str], bool] | None  # the seams with the template text around it
    check_after: Callable[[str], bool] | None
    end_tokens: int  # tokens after it up to the end-of-turn token, for trained answers
    trained: bool  # an answer that carries loss
    system: bool  # the system prompt


@dataclass(slots=True)
class _Compiled:
    """A template plan with what counting needs precomputed."""

    plan: Plan
    literal_tokens: int
    slots: list[_Slot]


class ExampleCounter:
    def __init__(self, tokenizer) -> None:
        self.counter = TokenCounter(tokenizer.backend_tokenizer)
        self.renderer = TemplateRenderer(tokenizer)
        self._compiled: dict[tuple, _Compiled | None] = {}

    def count(self, example: dict) -> ExampleTokens:
        """Counts a validated chat or preference example."""
        messages = example.get("messages")
        if messages is not None:
            total, trained, system = self.count_chat(messages)
            return ExampleTokens(total, trained, system, total)
        prompt = example["input"]["messages"]
        # Each output continues the prompt; only the outputs are trained.
        sequences = [
            self.count_chat([*prompt, *output], n_context=len(prompt))
            for output in (example["preferred_output"], example["non_preferred_output"])
        ]
        return ExampleTokens(
            sum(t for t, _, _ in sequences),
            sum(n for _, n, _ in sequences),
            sequences[0][2],
            max(t for t, _, _ in sequences),
        )

    def count_chat(self, messages: list[dict], n_context: int = 0) -> tuple[int, int, int]:
        """(tokens of the rendered chat, tokens that carry loss, tokens of the system prompt).

        The first `n_context` messages are never trained (a preference example's prompt).
        """
        contents = [c if type(c) is str else text_of(c) for c in [m.get("content") for m in messages]]
        # The shape: what decides the template's text around the contents and what is trained.
        names = self.renderer.uses_names
        key = (
            n_context,
            *[
                (m["role"], names and m.get("name"), not c, m.get("weight"))
                for m, c in zip(messages, contents, strict=True)
            ],
        )
        try:
            compiled = self._compiled[key]
        except KeyError:
            compiled = self._compile(key, messages, contents, n_context)
        count = self.counter.count
        if compiled is None:  # the template inspects contents: render it, count the text
            chat = _template_chat(messages, contents)
            trained = [i >= n_context and is_trained(m) for i, m in enumerate(messages)]
            system = next((i for i, m in enumerate(messages) if m["role"] in SYSTEM_ROLES), None)
            return (
                count(self.renderer.jinja(chat)),
                sum(count(c) + 1 for c, t in zip(contents, trained, strict=True) if t),
                count(contents[system]) if system is not None else 0,
            )

        total, answers, system_tokens, seams_ok = compiled.literal_tokens, 0, 0, True
        for message, check_before, check_after, end_tokens, trained, system in compiled.slots:
            text = contents[message]
            n = count(text)
            total += n
            if text and seams_ok:
                seams_ok = (check_before is None or check_before(text)) and (
                    check_after is None or check_after(text)
                )
            if trained:
                answers += n + end_tokens
            elif system:
                system_tokens = n
        if not seams_ok:  # a content merges with the template text around it: count the whole
            total = count(compiled.plan.render(contents))
        return total, answers, system_tokens

    def _compile(
        self, key: tuple, messages: list[dict], contents: list[str], n_context: int
    ) -> "_Compiled | None":
        plan = self.renderer.plan(_template_chat(messages, contents))
        compiled = None if plan is None else self._compile_plan(plan, messages, n_context)
        if len(self._compiled) < MAX_SHAPES:
            self._compiled[key] = compiled
        return compiled

    def _compile_plan(self, plan: Plan, messages: list[dict], n_context: int) -> _Compiled:
        counter, parts = self.counter, plan.parts
        literal_tokens = sum(counter.count(p) for p in parts if isinstance(p, str))
        system = next((i for i, m in enumerate(messages) if m["role"] in SYSTEM_ROLES), None)
        slots, seen = [], set()
        for k, part in enumerate(parts):
            if isinstance(part, str):
                continue
            before = parts[k - 1] if k else ""
            after = parts[k + 1] if k + 1 < len(parts) else ""
            first = part not in seen  # a content the template places twice is trained once
            seen.add(part)
            slots.append(
                _Slot(
                    message=part,
                    check_before=_seam(counter.seam_after, before),
                    check_after=_seam(counter.seam_before, after),
                    end_tokens=self._end_tokens(after),
                    trained=first and part >= n_context and is_trained(messages[part]),
                    system=first and part == system,
                )
            )
        return _Compiled(plan, literal_tokens, slots)

    def _end_tokens(self, following: object) -> int:
        """Tokens after an answer up to its end-of-turn token (the first added token that follows)."""
        if not isinstance(following, str):
            return 0
        found = [(following.find(t), -len(t), t) for t in self.counter.added_tokens if t in following]
        if not found:
            return 0
        start, _, token = min(found)
        return self.counter.count(following[: start + len(token)])


def _seam(
    make: Callable[[str], Callable[[str], bool] | None], neighbour: object
) -> Callable[[str], bool] | None:
    """The seam test against a literal neighbour; against another content (a rare template), never safe."""
    if isinstance(neighbour, str):
        return make(neighbour)
    return lambda text: False


def _template_chat(messages: list[dict], contents: list[str]) -> list[dict]:
    """What the chat template sees, as the trainer passes it: role, text content, name."""
    chat = []
    for msg, content in zip(messages, contents, strict=True):
        out = {"role": msg["role"], "content": content}
        if msg.get("name"):
            out["name"] = msg["name"]
        chat.append(out)
    return chat


@lru_cache(maxsize=4)
def example_counter(model: str, cache_dir: Path) -> ExampleCounter:
    """One per model and process: its caches of words and template plans are what make it fast."""
    return ExampleCounter(load_tokenizer(model, cache_dir))
