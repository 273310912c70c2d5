"""What the validation losses of a run say: the best step so far, overfitting, when to stop early.

Overfitting: the validation loss rose at each of the last two evaluations while the training
loss ended lower than before that rise (one rising evaluation is often noise; training loss is
compared across both intervals because its window average is noisy too). Reported once per run.

Early stopping: after `patience` evaluations in a row without a new lowest validation loss.
"""

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Verdict:
    improved: bool  # a new lowest validation loss: keep this adapter
    overfitting: bool  # first time the overfitting pattern shows
    stop: bool  # patience exhausted


@dataclass
class ValidationTracker:
    patience: int | None
    best_loss: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0
    recent: list[tuple[float, float]] = field(default_factory=list)  # (train, valid) of the last 3
    overfitting_reported: bool = False

    def observe(self, step: int, train_loss: float, valid_loss: float) -> Verdict:
        improved = self.best_loss is None or valid_loss < self.best_loss
        if improved:
            self.best_loss, self.best_step = valid_loss, step
            self.evaluations_since_best = 0
        else:
            self.evaluations_since_best += 1

        self.recent = [*self.recent, (train_loss, valid_loss)][-3:]
        overfitting = False
        if len(self.recent) == 3 and not self.overfitting_reported:
            (train_0, valid_0), (_, valid_1), (train_2, valid_2) = self.recent
            overfitting = valid_0 < valid_1 < valid_2 and train_2 < train_0
            self.overfitting_reported = overfitting

        stop = self.patience is not None and self.evaluations_since_best >= self.patience
        return Verdict(improved=improved, overfitting=overfitting, stop=stop)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "ValidationTracker":
        return cls(**{**state, "recent": [tuple(pair) for pair in state["recent"]]})
