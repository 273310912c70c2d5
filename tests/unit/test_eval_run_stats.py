"""Run figures: latency percentiles, format compliance and token totals."""

import pytest
from tunery_evaljudge.run_stats import format_compliance_rate, latency_summary, run_stats, token_totals
from tunery_evaljudge.templates import Sample


def test_latency_percentiles_interpolate_and_skip_unmeasured_samples():
    summary = latency_summary([float(v) for v in range(1, 101)] + [None])
    assert summary.n == 100
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p95_ms == pytest.approx(95.05)
    assert summary.max_ms == 100.0
    assert latency_summary([]).p50_ms is None


def test_format_compliance_counts_only_checked_answers():
    assert format_compliance_rate([True, False, True, None]) == pytest.approx(2 / 3)
    assert format_compliance_rate([None]) is None


def test_token_totals_add_reported_usage_and_count_the_rest():
    samples = [
        Sample("a", prompt_tokens=10, completion_tokens=3),
        Sample("b", prompt_tokens=7, completion_tokens=5),
        Sample("c"),
    ]
    totals = token_totals(samples)
    assert (totals.prompt_tokens, totals.completion_tokens, totals.total_tokens) == (17, 8, 25)
    assert totals.n_unreported == 1


def test_run_stats_bring_the_figures_together():
    samples = [
        Sample("{}", latency_ms=100, prompt_tokens=5, completion_tokens=2),
        Sample("", latency_ms=300, error="inference: UNAVAILABLE"),
    ]
    stats = run_stats(samples, format_compliant=[True, False])
    assert (stats.n, stats.n_errors) == (2, 1)
    assert stats.latency.p50_ms == pytest.approx(200.0)
    assert stats.tokens.total_tokens == 7
    assert stats.format_compliance_rate == 0.5
