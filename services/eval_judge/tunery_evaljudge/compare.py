"""Paired comparison of two runs on the same items: is the candidate better than the baseline?

- pass/fail: McNemar's exact test on the discordant pairs; the 95% CI of the difference in pass
  rates is Newcombe's hybrid score interval for paired proportions (his method 10): closed form,
  deterministic, good coverage with few items, and never a zero-width interval.
- scores: the 95% CI of the mean paired difference by bootstrap (BCa, 10,000 resamples, fixed
  seed: the same runs always give the same interval); the p-value from the Wilcoxon signed-rank
  test, exact for small runs and not driven by one outlier item.
- pairwise judge verdicts: a sign test (binomial) on wins against losses; ties carry no sign.

Deltas are candidate minus baseline; the verdict is "better" or "worse" when p < alpha.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

Verdict = Literal["better", "worse", "no significant difference"]
ALPHA = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def verdict(delta: float, p_value: float, alpha: float = ALPHA) -> Verdict:
    if p_value >= alpha or delta == 0:
        return "no significant difference"
    return "better" if delta > 0 else "worse"


@dataclass(frozen=True)
class PassFailComparison:
    n: int
    baseline_rate: float
    candidate_rate: float
    delta: float
    ci_low: float
    ci_high: float
    only_baseline_passed: int  # discordant pairs, the counts McNemar's test weighs
    only_candidate_passed: int
    p_value: float
    verdict: Verdict
    test: str = "McNemar exact"
    ci_method: str = "Newcombe (paired, method 10)"


def _paired(baseline: Sequence, candidate: Sequence) -> int:
    if len(baseline) != len(candidate):
        raise ValueError(f"the runs differ in length ({len(baseline)} and {len(candidate)} items)")
    if not baseline:
        raise ValueError("no items to compare")
    return len(baseline)


def newcombe_paired_ci(
    both: int, only_first: int, only_second: int, neither: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """CI of p_first - p_second for paired proportions (Newcombe 1998, method 10)."""
    n = both + only_first + only_second + neither
    first, second = both + only_first, both + only_second
    p1, p2 = first / n, second / n
    alpha = 1 - confidence
    l1, u1 = proportion_confint(first, n, alpha=alpha, method="wilson")
    l2, u2 = proportion_confint(second, n, alpha=alpha, method="wilson")
    # phi: the correlation of the two classifications, continuity-corrected as Newcombe does.
    margins = first * (n - first) * second * (n - second)
    cross = both * neither - only_first * only_second
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > n / 2 else cross) / math.sqrt(margins)
    delta = p1 - p2
    lower = delta - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    upper = delta + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def compare_pass_fail(
    baseline: Sequence[bool], candidate: Sequence[bool], alpha: float = ALPHA
) -> PassFailComparison:
    n = _paired(baseline, candidate)
    pairs = list(zip(baseline, candidate, strict=True))
    both = sum(1 for b, c in pairs if b and c)
    only_baseline = sum(1 for b, c in pairs if b and not c)
    only_candidate = sum(1 for b, c in pairs if c and not b)
    neither = n - both - only_baseline - only_candidate
    p_value = float(mcnemar([[both, only_baseline], [only_candidate, neither]], exact=True).pvalue)
    # Newcombe's interval is for first minus second: candidate first gives candidate - baseline.
    ci_low, ci_high = newcombe_paired_ci(both, only_candidate, only_baseline, neither)
    delta = (only_candidate - only_baseline) / n
    return PassFailComparison(
        n=n,
        baseline_rate=(both + only_baseline) / n,
        candidate_rate=(both + only_candidate) / n,
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        only_baseline_passed=only_baseline,
        only_candidate_passed=only_candidate,
        p_value=p_value,
        verdict=verdict(delta, p_value, alpha),
    )


@dataclass(frozen=True)
class ScoreComparison:
    n: int  # pairs compared
    n_dropped: int  # pairs where either run has no score (e.g. a judge failure)
    baseline_mean: float
    candidate_mean: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: Verdict
    ci_method: str
    test: str = "Wilcoxon signed-rank"


def _bootstrap_ci(differences: np.ndarray) -> tuple[float, float, str]:
    """(low, high, method) of the mean difference."""
    if np.ptp(differences) == 0:  # every pair differs alike: no spread to resample
        return float(differences[0]), float(differences[0]), "none (all differences equal)"
    for method in ("BCa", "percentile"):  # BCa is undefined on some near-degenerate samples
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            result = stats.bootstrap(
                (differences,),
                np.mean,
                confidence_level=CONFIDENCE,
                n_resamples=BOOTSTRAP_RESAMPLES,
                method=method,
                rng=np.random.default_rng(BOOTSTRAP_SEED),
                batch=1000,  # bounds memory on large runs
            )
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            break
    return float(low), float(high), f"paired bootstrap ({method})"


def compare_scores(
    baseline: Sequence[float | None], candidate: Sequence[float | None], alpha: float = ALPHA
) -> ScoreComparison:
    """Paired scores; a pair where either score is None is left out and counted in n_dropped."""
    _paired(baseline, candidate)
    kept = [(b, c) for b, c in zip(baseline, candidate, strict=True) if b is not None and c is not None]
    if not kept:
        raise ValueError("no item has a score in both runs")
    base = np.array([b for b, _ in kept], dtype=float)
    cand = np.array([c for _, c in kept], dtype=float)
    differences = cand - base
    delta = float(differences.mean())
    if np.any(differences != 0):
        p_value = float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)
    else:
        p_value = 1.0
    ci_low, ci_high, ci_method = _bootstrap_ci(differences)
    return ScoreComparison(
        n=len(kept),
        n_dropped=len(baseline) - len(kept),
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        verdict=verdict(delta, p_value, alpha),
        ci_method=ci_method,
    )


@dataclass(frozen=True)
class PairwiseComparison:
    wins: int  # the candidate's answer judged better
    ties: int
    losses: int
    win_rate: float  # (wins + ties / 2) / compared
    p_value: float
    verdict: Verdict
    test: str = "sign test (binomial, ties excluded)"


def compare_pairwise(wins: int, ties: int, losses: int, alpha: float = ALPHA) -> PairwiseComparison:
    if min(wins, ties, losses) < 0 or wins + ties + losses == 0:
        raise ValueError("no pairwise verdicts to compare")
    decided = wins + losses
    p_value = float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return PairwiseComparison(
        wins=wins,
        ties=ties,
        losses=losses,
        win_rate=(wins + ties / 2) / (wins + ties + losses),
        p_value=p_value,
        verdict=verdict(wins - losses, p_value, alpha),
    )
