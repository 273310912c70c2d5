"""`score_model`: an LLM judge scores each answer on the rubric in `input` (OpenAI's grader shape).

`input` holds the rubric as chat messages with templates; every value taken from the sample
reaches the judge fenced off as data. `range` is [1, 10] (whole numbers) or [0, 1] (OpenAI's
default); with `pass_threshold` a sample passes at that score or above. A judge failure leaves
the sample ungraded (score None), never scored zero.
"""

from collections.abc import Mapping
from typing import Any, Literal

from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunery_evaljudge.graders.base import Grader, GradeResult, TemplateStr
from tunery_evaljudge.judge import Judge, JudgeFailure, SamplingParams, ScoreRange
from tunery_evaljudge.judge_prompts import quote_block
from tunery_evaljudge.templates import Sample, SampleFieldError, reads_sample, render

RANGES = ((0.0, 1.0), (1.0, 10.0))


class JudgeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: TemplateStr
    type: Literal["message"] | None = None


class ScoreModelGrader(Grader):
    type: Literal["score_model"]
    model: str = Field(min_length=1)
    input: list[JudgeMessage] = Field(min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None
    sampling_params: SamplingParams | None = None

    @field_validator("input")
    @classmethod
    def _shows_the_answer(cls, messages: list[JudgeMessage]) -> list[JudgeMessage]:
        if not any(reads_sample(m.content) for m in messages):
            raise ValueError(
                "no message shows the judge the answer: refer to {{sample.output_text}} or "
                "{{sample.output_json}}"
            )
        return messages

    @field_validator("range")
    @classmethod
    def _known_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if tuple(value) not in RANGES:
            raise ValueError("the range is [1, 10] or [0, 1]")
        return value

    @model_validator(mode="after")
    def _threshold_in_range(self) -> "ScoreModelGrader":
        low, high = self.range
        if self.pass_threshold is not None and not low <= self.pass_threshold <= high:
            raise ValueError(f"pass_threshold {self.pass_threshold:g} is outside the range {low:g}-{high:g}")
        return self

    def judge_messages(self, item: Mapping[str, Any], sample: Sample) -> list[dict[str, str]]:
        """The rubric with item values in place and the sample's values fenced off as data."""
        return [
            {"role": m.role, "content": render(m.content, item, sample, quote_sample=quote_block)}
            for m in self.input
        ]

    async def grade(self, item: Mapping[str, Any], sample: Sample, judge_client: AsyncOpenAI) -> GradeResult:
        judge = Judge(judge_client, self.model)
        try:
            messages = self.judge_messages(item, sample)
        except SampleFieldError as exc:  # the rubric reads a JSON field the answer lacks: a fail
            return self.result(None, False, str(exc), judge=judge.describe())
        verdict = await judge.score(messages, ScoreRange(*self.range), self.sampling_params)
        if isinstance(verdict, JudgeFailure):
            error = f"judge failure: {verdict.error}"
            return self.result(
                None, None, error, judge=judge.describe(), attempts=verdict.attempts, raw=verdict.raw
            )
        passed = None if self.pass_threshold is None else verdict.score >= self.pass_threshold
        return self.result(
            verdict.score, passed, reason=verdict.reason, judge=judge.describe(), attempts=verdict.attempts
        )
