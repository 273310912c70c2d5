"""`tunery data`: check and prepare fine-tuning data offline, like a linter (no server needed).

The commands import data-prep (tokenizers, numpy) inside themselves: `tunery up` stays quick,
and an install without the data-prep package still runs every other command.
Exit codes of `validate`: 0 no errors (warnings allowed), 1 errors, 2 usage errors.
"""

from pathlib import Path

import typer
from rich.console import Console

from tunery_common.basemodels import DEFAULT_BASE_MODEL

data_app = typer.Typer(
    help="Check and prepare fine-tuning data offline (no server needed).", no_args_is_help=True
)
err = Console(stderr=True)

PROGRESS_FROM_BYTES = 4 << 20  # files smaller than this finish before a progress bar helps


def _dataprep():
    """The data-prep library, or exit 2 when this install lacks it."""
    try:
        from tunery_dataprep import report
    except ImportError as exc:
        err.print(f"[red]tunery data needs the data-prep package:[/] {exc}")
        raise typer.Exit(2) from None
    return report


def _settings():
    from tunery_dataprep.settings import DataPrepSettings

    try:
        return DataPrepSettings()
    except ValueError as exc:  # pydantic's message names the bad variable
        err.print(f"[red]invalid configuration:[/] {exc}")
        raise typer.Exit(2) from None


def _check_model(model: str) -> None:
    from tunery_common.basemodels import UnknownModelError, spec_of

    try:
        spec_of(model)
    except UnknownModelError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--model") from None


@data_app.command()
def validate(
    train: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Training JSONL."),
    validation_file: Path | None = typer.Option(
        None, "--validation-file", exists=True, dir_okay=False, readable=True, help="Validation JSONL."
    ),
    model: str = typer.Option(DEFAULT_BASE_MODEL, "--model", help="Base model: its tokenizer and context."),
    task: str | None = typer.Option(
        None,
        "--task",
        help="classification, extraction, format, summarization, tone or general (else detected).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """The dataset report: format errors, tokens, epochs, cost, quality warnings, what to do."""
    report_lib = _dataprep()
    from tunery_dataprep.quality import TASKS

    _check_model(model)
    if task is not None and task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; one of {', '.join(TASKS)}", param_hint="--task")
    settings = _settings()
    report = _with_progress(
        train,
        lambda progress: report_lib.build_report(
            train, validation_file, model=model, task=task, settings=settings, progress=progress
        ),
    )
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        from tunery_dataprep.console import print_report

        print_report(report, train, Console())
    raise typer.Exit(1 if report.n_errors else 0)


def _with_progress(path: Path, run):
    """Runs `run(progress)` under a progress bar over the file's bytes when the file is big."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    size = path.stat().st_size
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=size < PROGRESS_FROM_BYTES,
    ) as bar:
        task = bar.add_task(f"reading {path.name}", total=size)
        return run(lambda done: bar.update(task, completed=done))


def _prepared(what: str, action) -> None:
    """Runs a preparation helper; its ValueError ("line N: ...") is the user's error, exit 1."""
    _dataprep()
    try:
        message = action()
    except ValueError as exc:
        err.print(f"[red]{what} failed:[/] {exc}")
        raise typer.Exit(1) from None
    err.print(f"[green]{message}[/]")


def _fraction(value: float, option: str) -> float:
    if not 0 < value < 1:
        raise typer.BadParameter("must lie between 0 and 1 (exclusive)", param_hint=option)
    return value


@data_app.command()
def convert(
    src: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="CSV or prompt-completion JSONL."
    ),
    out: Path = typer.Option(..., "-o", "--output", dir_okay=False, help="Chat JSONL to write."),
    system: str | None = typer.Option(None, "--system", help="A system message for every example."),
    prompt_col: str | None = typer.Option(None, "--prompt-col", help="Column (or key) of the prompt."),
    completion_col: str | None = typer.Option(
        None, "--completion-col", help="Column (or key) of the answer."
    ),
) -> None:
    """Convert CSV or prompt-completion JSONL to chat JSONL."""

    def run() -> str:
        from tunery_dataprep.prepare import convert_to_chat

        n = convert_to_chat(src, out, system=system, prompt_col=prompt_col, completion_col=completion_col)
        return f"wrote {n} chat examples to {out}"

    _prepared("convert", run)


@data_app.command()
def split(
    src: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Chat JSONL."),
    validation_fraction: float = typer.Option(0.1, "--validation-fraction", help="Share held out, e.g. 0.1."),
    seed: int = typer.Option(0, "--seed", help="The same seed gives the same split."),
    out_dir: Path = typer.Option(
        ..., "-o", "--output", file_okay=False, help="Folder for train.jsonl and validation.jsonl."
    ),
) -> None:
    """Split into training and validation files (stratified by class, no duplicate across them)."""
    _fraction(validation_fraction, "--validation-fraction")

    def run() -> str:
        from tunery_dataprep.prepare import split_dataset

        n_train, n_valid = split_dataset(src, out_dir, validation_fraction=validation_fraction, seed=seed)
        return f"wrote {n_train} training and {n_valid} validation examples to {out_dir}"

    _prepared("split", run)


@data_app.command()
def mix(
    src: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Task chat JSONL."),
    general: Path = typer.Option(
        ..., "--general", exists=True, dir_okay=False, readable=True, help="General chat JSONL."
    ),
    fraction: float = typer.Option(
        0.15, "--fraction", help="Share of general examples in the result (0.1-0.2)."
    ),
    out: Path = typer.Option(..., "-o", "--output", dir_okay=False, help="Mixed chat JSONL to write."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Mix in general examples against catastrophic forgetting."""
    _fraction(fraction, "--fraction")

    def run() -> str:
        from tunery_dataprep.prepare import mix_general

        n = mix_general(src, general, fraction=fraction, out=out, seed=seed)
        return f"wrote {n} examples to {out}"

    _prepared("mix", run)
