"""What every check produces and what it is told about the run."""

from dataclasses import dataclass, field
from typing import Literal

MAX_LINES = 50  # lines listed per warning; the message says how many more there are

Severity = Literal["info", "warning", "error"]


@dataclass
class QualityWarning:
    code: str
    severity: Severity
    message: str
    lines: list[int]
    details: dict = field(default_factory=dict)


@dataclass
class CheckContext:
    task: str | None  # one of task.TASKS ("classification", "format", "tone", ...); None: detect it
    n_epochs: int
    training_usd_per_token: float
    context_length: int


def make_warning(
    code: str, severity: Severity, message: str, lines: list[int] | None = None, **details
) -> QualityWarning:
    """A warning whose line list is sorted and capped; the message then tells how many were left out."""
    lines = sorted(lines or [])
    if len(lines) > MAX_LINES:
        message += f" (first {MAX_LINES} lines listed, and {len(lines) - MAX_LINES} more)"
        details["n_lines"] = len(lines)
    return QualityWarning(code, severity, message, lines[:MAX_LINES], details)


def plural(n: int, noun: str, verb: str = "") -> str:
    """'1 example', '3 examples'; with a verb: '1 example repeats', '3 examples repeat', '1 example is'."""
    text = f"{n} {noun}{'' if n == 1 else 's'}"
    if verb == "is":
        return f"{text} {'is' if n == 1 else 'are'}"
    return f"{text} {verb}{'s' if n == 1 else ''}" if verb else text


def lines_text(lines: list[int], limit: int = 5) -> str:
    """'lines 3, 8, 12' or 'lines 3, 8, 12, …' for a message."""
    shown = ", ".join(map(str, lines[:limit]))
    return f"{'line' if len(lines) == 1 else 'lines'} {shown}" + (", …" if len(lines) > limit else "")
