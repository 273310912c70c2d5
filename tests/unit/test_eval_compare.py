"""Paired run comparisons: McNemar with Newcombe's interval, bootstrap + Wilcoxon, sign test."""

import pytest
from tunery_evaljudge.compare import compare_pairwise, compare_pass_fail, compare_scores, newcombe_paired_ci


def runs(both: int, only_baseline: int, only_candidate: int, neither: int) -> tuple[list[bool], list[bool]]:
    baseline = [True] * both + [True] * only_baseline + [False] * only_candidate + [False] * neither
    candidate = [True] * both + [False] * only_baseline + [True] * only_candidate + [False] * neither
    return baseline, candidate


def test_newcombe_interval_matches_the_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8 (Cavo et al.
    # 2012): table [[59, 6], [16, 80]] -> -0.0621 (95% CI -0.1186 to -0.0046).
    low, high = newcombe_paired_ci(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_thirty_against_ten_discordant_pairs_is_significant():
    baseline, candidate = runs(both=50, only_baseline=10, only_candidate=30, neither=10)
    result = compare_pass_fail(baseline, candidate)
    assert (result.only_candidate_passed, result.only_baseline_passed) == (30, 10)
    assert result.baseline_rate == pytest.approx(60 / 100) and result.candidate_rate == pytest.approx(
        80 / 100
    )
    assert result.delta == pytest.approx(0.2)
    assert result.p_value == pytest.approx(0.00222, abs=1e-5)  # two-sided exact binomial, 10 of 40
    assert result.ci_low > 0 and result.ci_low < result.delta < result.ci_high
    assert result.verdict == "better"
    assert compare_pass_fail(candidate, baseline).verdict == "worse"


def test_identical_runs_show_no_difference():
    baseline, candidate = runs(both=12, only_baseline=0, only_candidate=0, neither=8)
    result = compare_pass_fail(baseline, candidate)
    assert result.p_value == 1.0 and result.delta == 0
    assert result.ci_low < 0 < result.ci_high
    assert result.verdict == "no significant difference"


def test_few_discordant_pairs_are_not_significant():
    baseline, candidate = runs(both=40, only_baseline=2, only_candidate=5, neither=3)
    result = compare_pass_fail(baseline, candidate)
    assert result.p_value == pytest.approx(0.453125)  # 2 of 7 discordant, two-sided
    assert result.verdict == "no significant difference"


def test_runs_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        compare_pass_fail([True, False], [True])


def test_score_comparison_bootstraps_the_mean_difference_with_a_fixed_seed():
    baseline = [5.0, 6, 4, 7, 5, 6, 5, 4, 6, 5, 7, 6]
    candidate = [7.0, 8, 5, 8, 7, 7, 6, 6, 8, 6, 8, 8]
    result = compare_scores(baseline, candidate)
    assert result.delta == pytest.approx(sum(candidate) / 12 - sum(baseline) / 12)
    assert 0 < result.ci_low < result.delta < result.ci_high
    assert result.p_value < 0.01 and result.verdict == "better"
    assert compare_scores(baseline, candidate) == result  # same data, same interval


def test_identical_scores_show_no_difference_with_p_one():
    scores = [3.0, 7, 5, 9]
    result = compare_scores(scores, scores)
    assert result.p_value == 1.0 and (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.verdict == "no significant difference"


def test_pairs_without_a_score_are_left_out_and_counted():
    result = compare_scores([1.0, None, 3, 4], [2.0, 5, None, 5])
    assert (result.n, result.n_dropped) == (2, 2)
    assert result.delta == pytest.approx(1.0)


def test_pairwise_wins_and_losses_go_through_a_sign_test():
    result = compare_pairwise(wins=30, ties=7, losses=10)
    assert result.p_value == pytest.approx(0.00222, abs=1e-5)
    assert result.win_rate == pytest.approx((30 + 3.5) / 47)
    assert result.verdict == "better"
    assert compare_pairwise(wins=10, ties=7, losses=30).verdict == "worse"
    even = compare_pairwise(wins=0, ties=9, losses=0)
    assert even.p_value == 1.0 and even.verdict == "no significant difference"
