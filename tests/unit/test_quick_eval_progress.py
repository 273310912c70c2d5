"""The tally of a running quick eval: rates, ETA and when progress is reported."""

from tunery_evaljudge.progress import Tally


def test_rates_are_the_means_of_the_flags_so_far():
    tally = Tally(4, started=0.0)
    assert tally.exact_match_rate is None and tally.json_valid_rate is None
    for exact, valid in [(True, True), (False, True), (False, False)]:
        tally.add(exact, valid)
    assert tally.exact_match_rate == 1 / 3
    assert tally.json_valid_rate == 2 / 3


def test_figures_carry_counts_rates_and_an_eta_from_the_pace_so_far():
    tally = Tally(10, started=100.0)
    for _ in range(4):
        tally.add(True, False)
    assert tally.figures(now=102.0) == {
        "n_done": 4,
        "n_items": 10,
        "exact_match_rate": 1.0,
        "json_valid_rate": 0.0,
        "elapsed_s": 2.0,
        "eta_s": 3.0,
    }


def test_progress_is_due_every_five_percent_and_at_the_end():
    tally = Tally(100)
    due = [n for n in range(1, 101) if tally.add(False, False)]
    assert due == list(range(5, 101, 5))
    small = Tally(7)
    assert [n for n in range(1, 8) if small.add(True, True)] == [1, 2, 3, 4, 5, 6, 7]
    uneven = Tally(41)  # every 3 items, and the last one
    assert [n for n in range(1, 42) if uneven.add(True, True)] == [*range(3, 40, 3), 41]
