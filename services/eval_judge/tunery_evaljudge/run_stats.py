"""Figures of one run beside its grades: latency percentiles, format compliance, token totals."""

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel

from tunery_evaljudge.templates import Sample


class LatencySummary(BaseModel):
    n: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


class TokenTotals(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    n_unreported: int  # samples whose server reported no usage: the totals leave them out


class RunStats(BaseModel):
    n: int
    n_errors: int  # requests that failed: no answer
    latency: LatencySummary
    tokens: TokenTotals
    format_compliance_rate: float | None


def latency_summary(latencies_ms: Iterable[float | None]) -> LatencySummary:
    """Percentiles over the measured latencies (linear interpolation, as numpy does by default)."""
    values = np.array([v for v in latencies_ms if v is not None], dtype=float)
    if values.size == 0:
        return LatencySummary(n=0, p50_ms=None, p95_ms=None, max_ms=None)
    p50, p95 = np.percentile(values, [50, 95])
    return LatencySummary(
        n=int(values.size), p50_ms=float(p50), p95_ms=float(p95), max_ms=float(values.max())
    )


def format_compliance_rate(compliant: Iterable[bool | None]) -> float | None:
    """The share of answers in the required format; None entries (not checked) are left out."""
    flags = [bool(flag) for flag in compliant if flag is not None]
    return sum(flags) / len(flags) if flags else None


def token_totals(samples: Iterable[Sample]) -> TokenTotals:
    prompt = completion = unreported = 0
    for sample in samples:
        if sample.prompt_tokens is None and sample.completion_tokens is None:
            unreported += 1
            continue
        prompt += sample.prompt_tokens or 0
        completion += sample.completion_tokens or 0
    return TokenTotals(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        n_unreported=unreported,
    )


def run_stats(samples: Sequence[Sample], format_compliant: Sequence[bool | None] | None = None) -> RunStats:
    """`format_compliant`: per sample, whether a format grader (json_valid, json_schema) passed it."""
    return RunStats(
        n=len(samples),
        n_errors=sum(1 for s in samples if s.error is not None),
        latency=latency_summary(s.latency_ms for s in samples),
        tokens=token_totals(samples),
        format_compliance_rate=None if format_compliant is None else format_compliance_rate(format_compliant),
    )
