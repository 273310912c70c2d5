"""`tunery demo`: the newcomer's tour, driven through the gateway like any user would.

Uploads the support-ticket dataset, fine-tunes `smollm2-135m-instruct` with LoRA (a progress bar
fed by the job's events), runs the quick eval of the base and the fine-tuned model on the
held-out set, and shows answers side by side with JSON-valid and exact-match rates.
"""

import json
import time
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

POLL_S = 2.0


class DemoError(RuntimeError):
    pass


class Demo:
    def __init__(self, base_url: str, api_key: str, console: Console):
        self.console = console
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=600)
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )

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

    def quick_eval(self, heldout_file_id: str, model: str) -> dict:
        reply = self.http.post("/quick_evals", json={"model": model, "file_id": heldout_file_id})
        if reply.status_code != 200:
            raise DemoError(f"quick eval of {model} refused: {reply.text}")
        evaluation = reply.json()
        with Progress(
            TextColumn(f"[bold]eval {model[:48]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            bar = progress.add_task("eval", total=evaluation.get("n_items") or None)
            while evaluation["status"] not in ("succeeded", "failed"):
                time.sleep(POLL_S)
                evaluation = self.http.get(f"/quick_evals/{evaluation['id']}").json()
                progress.update(
                    bar, total=evaluation.get("n_items") or None, completed=evaluation.get("n_done", 0)
                )
        if evaluation["status"] != "succeeded":
            raise DemoError(f"quick eval of {model} failed: {evaluation.get('error')}")
        return evaluation

    def show(self, base: dict, tuned: dict, n_examples: int = 5) -> None:
        answers = Table(title="Held-out tickets: base vs fine-tuned", show_lines=True)
        answers.add_column("ticket", max_width=48)
        answers.add_column("expected")
        answers.add_column("base model", max_width=40)
        answers.add_column("fine-tuned")
        for b, t in list(zip(base["results"], tuned["results"], strict=True))[:n_examples]:
            answers.add_row(b["prompt"], b["expected"], b["output"], t["output"])
        self.console.print(answers)
        rates = Table(title=f"Quick eval on {base['n_items']} held-out tickets")
        rates.add_column("model")
        rates.add_column("JSON-valid", justify="right")
        rates.add_column("exact match", justify="right")
        for name, result in (("base " + base["model"], base), ("fine-tuned " + tuned["model"], tuned)):
            rates.add_row(name, f"{result['json_valid_rate']:.1%}", f"{result['exact_match_rate']:.1%}")
        self.console.print(rates)


def run_demo(
    base_url: str,
    api_key: str,
    train: Path,
    heldout: Path,
    model: str,
    hyperparameters: dict,
    console: Console,
) -> dict:
    """Runs the tour; returns the figures it printed (for scripts and tests)."""
    started = time.monotonic()
    demo = Demo(base_url, api_key, console)
    heldout_file = demo.client.files.create(file=heldout.open("rb"), purpose="evals")
    fine_tuned = demo.fine_tune(train, model, hyperparameters, suffix="tickets")
    base_eval = demo.quick_eval(heldout_file.id, model)
    tuned_eval = demo.quick_eval(heldout_file.id, fine_tuned)
    demo.show(base_eval, tuned_eval)
    figures = {
        "model": model,
        "fine_tuned_model": fine_tuned,
        "base_json_valid_rate": base_eval["json_valid_rate"],
        "base_exact_match_rate": base_eval["exact_match_rate"],
        "tuned_json_valid_rate": tuned_eval["json_valid_rate"],
        "tuned_exact_match_rate": tuned_eval["exact_match_rate"],
        "demo_seconds": round(time.monotonic() - started, 1),
    }
    console.print(json.dumps(figures))
    return figures
