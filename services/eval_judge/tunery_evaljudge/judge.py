"""LLM-as-judge over any OpenAI-compatible endpoint, through the official `openai` SDK.

Bias controls:
- pairwise judging asks both orders (A then B, B then A) and calls a disagreement a tie;
- the instructions penalise padding and verbosity (judge_prompts);
- answers arrive fenced off as data (judge_prompts.quote_block), and only the judge's own
  structured verdict (`response_format` json_schema, strict) is read, never a number in prose;
- a verdict that does not parse or is out of range is asked again once, then is a JudgeFailure:
  counted as a failure, never scored.
An endpoint that cannot be reached or refuses the credentials raises JudgeUnavailable: that is
no verdict on any answer.
"""

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict

from tunery_evaljudge import judge_prompts

Winner = Literal["a", "b", "tie"]
Choice = Literal["1", "2", "tie"]
MAX_REASON_CHARS = 500
Parsed = TypeVar("Parsed")


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not give any verdict (unreachable, bad key, unknown model)."""


class SelfJudgingError(ValueError):
    pass


def check_self_judging(judge_model: str, models_under_test: Iterable[str], allow: bool = False) -> None:
    """A model grading its own answers favours them: refused unless explicitly allowed."""
    if allow:
        return
    judged = {m.strip().casefold() for m in models_under_test}
    if judge_model.strip().casefold() in judged:
        raise SelfJudgingError(
            f"the judge model {judge_model!r} is also a model under test; use another judge or "
            "set allow_self_judging"
        )


class SamplingParams(BaseModel):
    """The judge's sampling (OpenAI's score_model `sampling_params`); greedy unless told otherwise."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_completions_tokens: int | None = None

    def request_options(self) -> dict[str, Any]:
        options = {"temperature": 0.0 if self.temperature is None else self.temperature}
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.seed is not None:
            options["seed"] = self.seed
        if self.max_completions_tokens is not None:
            options["max_completion_tokens"] = self.max_completions_tokens
        return options


@dataclass(frozen=True)
class ScoreRange:
    low: float
    high: float

    @property
    def integer(self) -> bool:  # 1-10 scores are whole numbers; 0-1 scores are fractions
        return self.low == int(self.low) and self.high == int(self.high) and self.high - self.low > 1


@dataclass(frozen=True)
class ScoreVerdict:
    score: float
    reason: str
    attempts: int


@dataclass(frozen=True)
class JudgeFailure:
    error: str
    attempts: int
    raw: str | None = None  # the judge's last reply, clipped, for the report


@dataclass(frozen=True)
class OrderVerdict:
    first: Literal["a", "b"]  # which answer was shown as "1"
    choice: Choice
    reason: str

    @property
    def winner(self) -> Winner:
        if self.choice == "tie":
            return "tie"
        shown_first = self.choice == "1"
        return self.first if shown_first else ("b" if self.first == "a" else "a")


@dataclass(frozen=True)
class PairwiseVerdict:
    winner: Winner | None  # None: a judge failure in either order
    orders: tuple[OrderVerdict, ...]
    error: str | None = None

    @property
    def consistent(self) -> bool:
        return len(self.orders) == 2 and self.orders[0].winner == self.orders[1].winner


def _clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _verdict_object(content: str | None) -> dict[str, Any]:
    if content is None:
        raise ValueError("the judge returned no content (a refusal?)")
    try:
        verdict = json.loads(content)
    except ValueError:
        raise ValueError("the verdict is not JSON") from None
    if not isinstance(verdict, dict):
        raise ValueError("the verdict is not a JSON object")
    if not isinstance(verdict.get("reason"), str):
        raise ValueError("the verdict has no reason string")
    return verdict


def _parse_score(score_range: ScoreRange) -> Callable[[str | None], tuple[float, str]]:
    def parse(content: str | None) -> tuple[float, str]:
        verdict = _verdict_object(content)
        score = verdict.get("score")
        # bool is an int in Python, and "7" is prose: neither is a score.
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError("the verdict's score is not a number")
        if score_range.integer and score != int(score):
            raise ValueError(f"the verdict's score {score} is not a whole number")
        if not score_range.low <= score <= score_range.high:
            raise ValueError(
                f"the verdict's score {score} is outside {score_range.low:g}-{score_range.high:g}"
            )
        return float(score), verdict["reason"]

    return parse


def _parse_choice(content: str | None) -> tuple[Choice, str]:
    verdict = _verdict_object(content)
    if verdict.get("winner") not in ("1", "2", "tie"):
        raise ValueError('the verdict\'s winner is not "1", "2" or "tie"')
    return verdict["winner"], verdict["reason"]


def public_url(url: httpx.URL | str) -> str:
    """The endpoint's URL for reports, without credentials."""
    return str(httpx.URL(str(url)).copy_with(userinfo=b""))


class Judge:
    def __init__(self, client: AsyncOpenAI, model: str, max_attempts: int = 2):
        self.client = client
        self.model = model
        self.max_attempts = max_attempts

    @classmethod
    def connect(cls, base_url: str, api_key: str, model: str, timeout_s: float = 120.0) -> "Judge":
        return cls(AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s), model)

    def describe(self) -> dict[str, str]:
        """Who judged: every report names it."""
        return {"model": self.model, "base_url": public_url(self.client.base_url)}

    async def score(
        self, messages: list[dict[str, str]], score_range: ScoreRange, sampling: SamplingParams | None = None
    ) -> ScoreVerdict | JudgeFailure:
        """A score for the answer quoted in `messages` (the criteria, the answer in its blocks)."""
        instructions = judge_prompts.score_instructions(
            score_range.low, score_range.high, score_range.integer
        )
        verdict = await self._verdict(
            _with_instructions(instructions, messages),
            "score_verdict",
            judge_prompts.score_schema(score_range.low, score_range.high, score_range.integer),
            _parse_score(score_range),
            sampling,
        )
        if isinstance(verdict, JudgeFailure):
            return verdict
        (score, reason), attempts = verdict
        return ScoreVerdict(score, _clip(reason), attempts)

    async def compare(
        self,
        request: str,
        answer_a: str,
        answer_b: str,
        criteria: str | None = None,
        sampling: SamplingParams | None = None,
    ) -> PairwiseVerdict:
        """Which answer to `request` is better, asked in both orders; a disagreement is a tie."""
        system = {"role": "system", "content": judge_prompts.pairwise_instructions(criteria)}

        async def ask(first: Literal["a", "b"]) -> OrderVerdict | JudgeFailure:
            shown = (answer_a, answer_b) if first == "a" else (answer_b, answer_a)
            user = {"role": "user", "content": judge_prompts.pairwise_prompt(request, *shown)}
            verdict = await self._verdict(
                [system, user], "pairwise_verdict", judge_prompts.PAIRWISE_SCHEMA, _parse_choice, sampling
            )
            if isinstance(verdict, JudgeFailure):
                return verdict
            (choice, reason), _ = verdict
            return OrderVerdict(first, choice, _clip(reason))

        both = await asyncio.gather(ask("a"), ask("b"))
        orders = tuple(v for v in both if isinstance(v, OrderVerdict))
        failures = [v for v in both if isinstance(v, JudgeFailure)]
        if failures:
            return PairwiseVerdict(None, orders, failures[0].error)
        agreed = orders[0].winner == orders[1].winner
        return PairwiseVerdict(orders[0].winner if agreed else "tie", orders)

    async def _verdict(
        self,
        messages: list[dict[str, str]],
        schema_name: str,
        schema: dict,
        parse: Callable[[str | None], Parsed],
        sampling: SamplingParams | None,
    ) -> tuple[Parsed, int] | JudgeFailure:
        """(parsed verdict, attempts), or a JudgeFailure once `max_attempts` verdicts failed to parse."""
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "strict": True, "schema": schema},
        }
        options = (sampling or SamplingParams()).request_options()
        error, content = "", None
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self.client.chat.completions.create(
                    model=self.model, messages=messages, response_format=response_format, **options
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                # This request was refused (e.g. too long); others may go through.
                return JudgeFailure(f"the judge refused the request: {exc.message}", attempt)
            except openai.OpenAIError as exc:
                where = self.describe()
                raise JudgeUnavailable(f"judge {where['model']} at {where['base_url']}: {exc}") from exc
            content = response.choices[0].message.content if response.choices else None
            try:
                return parse(content), attempt
            except ValueError as exc:
                error = str(exc)
        raw = None if content is None else _clip(content)
        return JudgeFailure(
            f"no valid verdict in {self.max_attempts} attempts: {error}", self.max_attempts, raw
        )


def _with_instructions(instructions: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """One leading system message (some chat templates allow no other): ours, then the author's."""
    authored = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    system = "\n\n".join([instructions, *(f"Evaluation criteria:\n{text}" for text in authored)])
    rest = [m for m in messages if m["role"] not in ("system", "developer")]
    return [{"role": "system", "content": system}, *rest]
