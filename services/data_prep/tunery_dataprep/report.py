"""The dataset report: one library behind the gRPC service, the HTTP API and `tunery data validate`.

`build_report` streams the training (and validation) file once, then adds what the whole set
tells: token figures, the auto epoch count, the billed and trained tokens, cost estimates and the
quality warnings with their recommendations.
"""

import os
from array import array
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from tunery_common.basemodels import spec_of
from tunery_common.training_rules import DEFAULT_MAX_SEQ_LEN, auto_n_epochs

from tunery_dataprep.cookbook import COOKBOOK_CODES
from tunery_dataprep.cost import TrainingCost, load_prices, training_costs
from tunery_dataprep.quality import CheckContext, detect_task, recommendations, run_checks
from tunery_dataprep.scan import CounterSpec, FileScan, Progress, ScanLimits, Source, scan_file
from tunery_dataprep.settings import DataPrepSettings


class Distribution(BaseModel):
    min: int = 0
    max: int = 0
    mean: float = 0.0
    median: float = 0.0
    p10: float = 0.0
    p90: float = 0.0

    @classmethod
    def of(cls, values: array) -> "Distribution":
        if not values:
            return cls()
        a = np.frombuffer(values, dtype=np.int64)
        p10, median, p90 = np.percentile(a, [10, 50, 90])
        return cls(
            min=int(a.min()),
            max=int(a.max()),
            mean=round(float(a.mean()), 2),
            median=float(median),
            p10=float(p10),
            p90=float(p90),
        )


class TokenFigures(BaseModel):
    total: int = 0  # of the valid examples, rendered with the model's chat template
    billing: int = 0  # the same, each example capped at the billing limit
    assistant: int = 0  # those that carry loss
    per_example: Distribution = Field(default_factory=Distribution)


class ErrorItem(BaseModel):
    line: int
    code: str
    message: str
    path: str


class WarningItem(BaseModel):
    code: str
    severity: str
    message: str
    lines: list[int]
    details: dict = Field(default_factory=dict)


class FileReport(BaseModel):
    format: str
    n_examples: int  # non-blank lines
    n_valid_examples: int
    format_errors: dict[str, int]  # count per error class, the cookbook's first
    errors: list[ErrorItem]  # the first ones (and whole-file errors)
    n_errors: int
    tokens: TokenFigures


class Report(FileReport):
    model: str
    task: str | None  # the hint, else the detected task
    billing_token_cap: int
    n_epochs: int
    estimated_trained_tokens: int
    cost_estimates: list[TrainingCost]
    warnings: list[WarningItem]
    recommendations: list[str]
    validation: FileReport | None = None


def _ordered_counts(scan: FileScan) -> dict[str, int]:
    order = {code: i for i, code in enumerate(COOKBOOK_CODES)}
    return dict(sorted(scan.error_counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def billing_tokens(totals: array, cap: int) -> int:
    """The cookbook's billing estimate: each example's tokens, capped at `cap`."""
    return int(np.minimum(np.frombuffer(totals, dtype=np.int64), cap).sum())


def file_report(scan: FileScan, billing_cap: int) -> FileReport:
    return FileReport(
        format=scan.format,
        n_examples=scan.n_examples,
        n_valid_examples=scan.n_valid,
        format_errors=_ordered_counts(scan),
        errors=[ErrorItem(line=e.line, code=e.code, message=e.message, path=e.path) for e in scan.errors],
        n_errors=scan.n_errors,
        tokens=TokenFigures(
            total=sum(scan.totals),
            billing=billing_tokens(scan.totals, billing_cap),
            assistant=sum(scan.trained),
            per_example=Distribution.of(scan.totals),
        ),
    )


def idle_cpus() -> int:
    """CPUs nobody else is using (this process counts as one busy), at least one: on a shared
    machine, workers fighting other jobs for a core cost more than they win."""
    cpus = os.cpu_count() or 1
    others = max(0.0, os.getloadavg()[0] - 1)
    return max(1, min(cpus, round(cpus - others)))


def kept_tokens(model: str) -> int:
    """Tokens of an example that training keeps by default: the trainer's max_seq_len, or less."""
    return min(spec_of(model).context_length, DEFAULT_MAX_SEQ_LEN)


def scan_limits(model: str, settings: DataPrepSettings, *, training: bool) -> ScanLimits:
    return ScanLimits(
        context_length=spec_of(model).context_length,
        truncation_length=kept_tokens(model),
        max_errors=settings.max_reported_errors,
        min_examples=settings.min_examples if training else 0,
        batch_lines=settings.batch_lines,
        workers=settings.workers or idle_cpus(),
        parallel_from_bytes=settings.parallel_from_mb << 20,
        start_method=settings.start_method,
    )


def scan(
    source: Source,
    *,
    model: str,
    settings: DataPrepSettings,
    training: bool,
    sketch: bool,
    progress: Progress | None = None,
) -> FileScan:
    """The streamed pass over one file (raises UnknownModelError for a model we do not know)."""
    limits = scan_limits(model, settings, training=training)
    spec = CounterSpec(model, Path(settings.model_cache))
    return scan_file(source, spec, limits, sketch=sketch, progress=progress)


def build_report(
    train: Source,
    validation: Source | None = None,
    *,
    model: str,
    task: str | None = None,
    settings: DataPrepSettings | None = None,
    progress: Progress | None = None,
) -> Report:
    settings = settings or DataPrepSettings()
    prices = load_prices(settings.prices_file)
    train_scan = scan(train, model=model, settings=settings, training=True, sketch=True, progress=progress)
    valid_scan = (
        scan(validation, model=model, settings=settings, training=False, sketch=True)
        if validation is not None
        else None
    )
    train_report = file_report(train_scan, settings.billing_token_cap)
    n_epochs = auto_n_epochs(train_scan.n_valid) if train_scan.n_valid else 0
    trained_tokens = n_epochs * train_report.tokens.billing

    warnings, advice = [], []
    if train_scan.sketches:
        ctx = CheckContext(
            task=task,  # None: the checks detect the task and the advice says what they assumed
            n_epochs=n_epochs,
            training_usd_per_token=prices.training.get(settings.reference_backend, 0.0) / 1_000_000,
            context_length=kept_tokens(model),
        )
        found = run_checks(train_scan.sketches, valid_scan.sketches if valid_scan else None, ctx)
        warnings = [
            WarningItem(code=w.code, severity=w.severity, message=w.message, lines=w.lines, details=w.details)
            for w in found
        ]
        advice = recommendations(
            train_scan.sketches, found, ctx, valid=valid_scan.sketches if valid_scan else None
        )
        task = task or detect_task(train_scan.sketches)
    return Report(
        **train_report.model_dump(),
        model=model,
        task=task,
        billing_token_cap=settings.billing_token_cap,
        n_epochs=n_epochs,
        estimated_trained_tokens=trained_tokens,
        cost_estimates=training_costs(
            trained_tokens, model, prices, gpu=settings.gpu, gpu_usd_per_hour=settings.gpu_usd_per_hour
        ),
        warnings=warnings,
        recommendations=advice,
        validation=file_report(valid_scan, settings.billing_token_cap) if valid_scan else None,
    )
