"""The tally of a running quick eval and when to report it: every ~5% of the items and at the end."""

import math
import time
from dataclasses import dataclass, field

REPORTS_PER_EVAL = 20  # one progress event per 5% of the items


def rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


@dataclass
class Tally:
    n_items: int
    started: float = field(default_factory=time.monotonic)
    n_done: int = 0
    n_exact: int = 0
    n_json: int = 0

    @property
    def report_every(self) -> int:
        return max(1, math.ceil(self.n_items / REPORTS_PER_EVAL))

    def add(self, exact_match: bool, json_valid: bool) -> bool:
        """Counts one graded item; True when a progress report is due."""
        self.n_done += 1
        self.n_exact += exact_match
        self.n_json += json_valid
        return self.n_done % self.report_every == 0 or self.n_done == self.n_items

    @property
    def exact_match_rate(self) -> float | None:
        return rate(self.n_exact, self.n_done)

    @property
    def json_valid_rate(self) -> float | None:
        return rate(self.n_json, self.n_done)

    def figures(self, now: float | None = None) -> dict[str, float | int | None]:
        """The data of a progress event; the ETA assumes the remaining items take as long as the done ones."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        eta = elapsed / self.n_done * (self.n_items - self.n_done) if self.n_done else None
        return {
            "n_done": self.n_done,
            "n_items": self.n_items,
            "exact_match_rate": self.exact_match_rate,
            "json_valid_rate": self.json_valid_rate,
            "elapsed_s": round(elapsed, 3),
            "eta_s": None if eta is None else round(eta, 3),
        }
