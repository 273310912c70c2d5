"""The validation report of one file: what the gRPC service and the job creation use."""

from dataclasses import dataclass, field
from pathlib import Path

from tunery_dataprep.tokens import count_tokens, load_tokenizer
from tunery_dataprep.validate import MAX_REPORTED_ERRORS, LineError, parse_chat_jsonl


@dataclass
class Report:
    n_examples: int
    errors: list[LineError] = field(default_factory=list)
    n_errors: int = 0
    total_tokens: int = 0
    assistant_tokens: int = 0


def build_report(data: bytes, model: str, cache_dir: Path) -> Report:
    parsed = parse_chat_jsonl(data)
    report = Report(
        n_examples=len(parsed.examples) + len({e.line for e in parsed.errors if e.line}),
        errors=parsed.errors[:MAX_REPORTED_ERRORS],
        n_errors=len(parsed.errors),
    )
    if parsed.examples:
        report.total_tokens, report.assistant_tokens = count_tokens(
            load_tokenizer(model, cache_dir), parsed.examples
        )
    return report
