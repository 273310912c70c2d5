"""The dataset report for a terminal (`tunery data validate` without --json)."""

from pathlib import Path

from rich.console import Console
from rich.table import Table

from tunery_dataprep.report import FileReport, Report

SHOWN_ERRORS = 20
_SEVERITY = {"error": "red", "warning": "yellow", "info": "cyan"}


def print_report(report: Report, path: Path, console: Console) -> None:
    console.print(
        f"[bold]{path.name}[/]: {report.n_examples} examples ({report.format} format), "
        f"{report.n_valid_examples} valid; model {report.model}; task {report.task or 'unknown'}"
    )
    _print_file(report, console)
    if report.validation is not None:
        console.print(
            f"\n[bold]validation file[/]: {report.validation.n_examples} examples, "
            f"{report.validation.n_valid_examples} valid"
        )
        _print_file(report.validation, console)
    if report.n_valid_examples:
        _print_training(report, console)
    if report.warnings:
        console.print(f"\n[bold]warnings[/] ({len(report.warnings)})")
        for w in report.warnings:
            console.print(f"  [{_SEVERITY.get(w.severity, 'white')}]{w.severity}[/] {w.code}: {w.message}")
    if report.recommendations:
        console.print("\n[bold]recommendations[/]")
        for advice in report.recommendations:
            console.print(f"  • {advice}")
    errors = report.n_errors + (report.validation.n_errors if report.validation else 0)
    if errors:
        console.print(f"\n[red]✗ {errors} errors[/]: fix them before fine-tuning")
    else:
        console.print(f"\n[green]✓ no errors[/] ({len(report.warnings)} warnings)")


def _print_file(report: FileReport, console: Console) -> None:
    if report.format_errors:
        table = Table("error class", "count", title="format errors", title_justify="left")
        for code, count in report.format_errors.items():
            table.add_row(code, str(count))
        console.print(table)
        for e in report.errors[:SHOWN_ERRORS]:
            where = f"line {e.line}" if e.line else "file"
            console.print(f"  [red]{where}[/] {e.code}: {e.path + ': ' if e.path else ''}{e.message}")
        if report.n_errors > SHOWN_ERRORS:
            console.print(
                f"  … and {report.n_errors - SHOWN_ERRORS} more (--json lists the first {len(report.errors)})"
            )
    t, d = report.tokens, report.tokens.per_example
    if report.n_valid_examples:
        console.print(
            f"tokens: {t.total:,} total, {t.billing:,} billed, {t.assistant:,} trained (assistant); "
            f"per example min {d.min}, p10 {d.p10:g}, median {d.median:g}, mean {d.mean:g}, "
            f"p90 {d.p90:g}, max {d.max}"
        )


def _print_training(report: Report, console: Console) -> None:
    trained = report.estimated_trained_tokens
    console.print(f"\n[bold]training[/]: {report.n_epochs} epochs (auto) → ~{trained:,} trained tokens")
    table = Table("backend", "USD", "GPU-hours", title="cost estimates", title_justify="left")
    for cost in report.cost_estimates:
        hours = f"{cost.gpu_hours:.3g}" if cost.gpu_hours is not None else ""
        table.add_row(cost.backend, f"{cost.usd:,.2f}" if cost.usd >= 0.01 else f"{cost.usd:.2g}", hours)
    console.print(table)
