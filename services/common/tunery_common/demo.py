"""`tunery demo`: the newcomer's tour, driven through the gateway like any user would.

Uploads the support-ticket dataset, fine-tunes `smollm2-135m-instruct` with LoRA (a progress bar
fed by the job's events), then evaluates through the Evals API: the base and the fine-tuned model
on the held-out tickets (JSON validity, exact match, category accuracy and macro-F1, compared with
paired significance), answers side by side, and the general-abilities regression check.
"""

import json
import time
from pathlib import Path

from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tunery_common.cli_eval import (
    check_general_abilities,
    compare,
    grader_config,
    items_of,
    print_comparison,
    print_runs,
    run_models,
)

POLL_S = 2.0
TICKET_CRITERIA = [grader_config(spec) for spec in ("json_valid", "exact", "classification:field=category")]
ANSWER_TOKENS = 24  # a ticket's answer is about ten tokens: {"category": "billing"}


class DemoError(RuntimeError):
    pass


class Demo:
    def __init__(self, base_url: str, api_key: str, console: Console):
        self.console = console
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=600)

    def fine_tune(self, train: Path, model: str, hyperparameters: dict, suffix: str) -> str:
        uploaded = self.client.files.create(file=train.open("rb"), purpose="fine-tune")
        self.console.print(f"uploaded {train} as {uploaded.id} ({uploaded.bytes} bytes)")
        job = self.client.fine_tuning.jobs.create(
            model=model,
            training_file=uploaded.id,
            suffix=suffix,
            seed=42,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        )
        self.console.print(f"fine-tuning job {job.id} created")
        columns = (
            TextColumn("[bold]fine-tuning"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.fields[steps]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        seen: set[str] = set()
        with Progress(*columns, console=self.console) as progress:
            bar = progress.add_task("train", total=None, loss="-", steps="?")
            while True:
                job = self.client.fine_tuning.jobs.retrieve(job.id)
                events = self.client.fine_tuning.jobs.list_events(job.id, limit=50).data
                for event in reversed(events):
                    if event.id in seen:
                        continue
                    seen.add(event.id)
                    if event.type == "metrics" and event.data:
                        data = dict(event.data)
                        progress.update(
                            bar,
                            total=data["total_steps"],
                            completed=data["step"],
                            steps=data["total_steps"],
                            loss=f"{data['train_loss']:.3f}",
                        )
                    else:
                        progress.console.print(f"  {event.message}")
                if job.status in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(POLL_S)
        if job.status != "succeeded":
            raise DemoError(f"the job ended {job.status}: {job.error.message if job.error else ''}")
        self.console.print(
            f"fine-tuned model: [bold]{job.fine_tuned_model}[/] ({job.trained_tokens} tokens trained)"
        )
        return job.fine_tuned_model

    def evaluate(self, heldout: Path, base: str, tuned: str) -> dict:
        """Both models on the held-out tickets: pass rates, the comparison, a few answers."""
        source = {"type": "file_content", "content": [{"item": item} for item in items_of(heldout)]}
        eval_id, finished = run_models(
            self.client,
            "support tickets",
            [base, tuned],
            source,
            TICKET_CRITERIA,
            ANSWER_TOKENS,
            self.console,
        )
        base_run, tuned_run = finished.values()
        print_runs(TICKET_CRITERIA, finished, self.console)
        for run in (base_run, tuned_run):
            if run.status != "completed":
                raise DemoError(f"the eval run of {run.model} ended {run.status}")
        comparison = compare(self.client, eval_id, base_run, tuned_run)
        print_comparison(comparison, self.console)
        self.show_answers(eval_id, base_run, tuned_run)
        self.console.print(f"report: {tuned_run.report_url}?compare_with={base_run.id}")
        figures: dict = {}
        for prefix, run in (("base", base_run), ("tuned", tuned_run)):
            criteria = run.model_extra["aggregates"]["criteria"]
            figures[f"{prefix}_json_valid_rate"] = criteria["json_valid"]["pass_rate"]
            figures[f"{prefix}_exact_match_rate"] = criteria["exact"]["pass_rate"]
            report = criteria["classification:category"].get("classification") or {}
            figures[f"{prefix}_category_accuracy"] = report.get("accuracy")
            figures[f"{prefix}_category_macro_f1"] = report.get("macro_f1")
        for entry in comparison["testing_criteria"]:
            pass_fail = entry["pass_fail"]
            figures[f"{entry['testing_criteria']}_p_value"] = pass_fail["p_value"]
            figures[f"{entry['testing_criteria']}_verdict"] = pass_fail["verdict"]
        return figures

    def show_answers(self, eval_id: str, base_run, tuned_run, n_examples: int = 5) -> None:
        answers = Table(title="Held-out tickets: base vs fine-tuned", show_lines=True)
        for column, width in (("ticket", 48), ("expected", None), ("base model", 40), ("fine-tuned", None)):
            answers.add_column(column, max_width=width)
        pages = [
            self.client.evals.runs.output_items.list(run.id, eval_id=eval_id, limit=n_examples).data
            for run in (base_run, tuned_run)
        ]
        for b, t in zip(*pages, strict=True):
            ticket = b.sample.input[-1].content if b.sample.input else ""
            answers.add_row(ticket, b.datasource_item["reference"], _answer(b), _answer(t))
        self.console.print(answers)


def _answer(output_item) -> str:
    return output_item.sample.output[0].content if output_item.sample.output else ""


def run_demo(
    base_url: str,
    api_key: str,
    train: Path,
    heldout: Path,
    model: str,
    hyperparameters: dict,
    console: Console,
    general_abilities: bool = True,
) -> dict:
    """Runs the tour; returns the figures it printed (for scripts and tests)."""
    started = time.monotonic()
    demo = Demo(base_url, api_key, console)
    fine_tuned = demo.fine_tune(train, model, hyperparameters, suffix="tickets")
    figures = {"model": model, "fine_tuned_model": fine_tuned}
    figures |= demo.evaluate(heldout, model, fine_tuned)
    if general_abilities:
        report = check_general_abilities(demo.client, model, fine_tuned, console=console, progress=console)
        if report is None:
            raise DemoError("the general-abilities runs did not complete")
        figures["general_abilities_drop"] = {
            d["category"]: d["drop"] for d in [*report["categories"], report["overall"]]
        }
        figures["general_abilities_flagged"] = report["flagged"]
    figures["demo_seconds"] = round(time.monotonic() - started, 1)
    console.print(json.dumps(figures))
    return figures
