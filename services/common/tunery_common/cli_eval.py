"""`tunery eval run`: one or two models on a chat JSONL file, graded, compared, through the Evals API.

Each example's last assistant message is the reference and the messages before it the prompt
(as in the quick eval). Graders are short specs:
  json_valid | exact | contains | classification[:field=F][,labels=a|b|c] | rouge_l:threshold=0.5 |
  bleu:threshold=0.3
`classification:field=category` reads the class from the answer's JSON field `category` and from
the reference's. With two models the second is the candidate, compared with the first.
"""

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tunery_common.cli_models import api_base_url, api_key, fail

eval_app = typer.Typer(help="Evals: run models on a file and grade their answers.", no_args_is_help=True)
out = Console()
FINAL = {"completed", "failed", "canceled"}


def _options(spec: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = spec.partition(":")
    options = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"{spec!r}: expected key=value after ':'")
        options[key.strip()] = value.strip()
    return kind.strip(), options


def grader_config(spec: str) -> dict[str, Any]:
    """The testing criterion a `--grader` spec stands for."""
    kind, options = _options(spec)
    if kind == "json_valid":
        return {"type": "json_valid", "name": "json_valid"}
    if kind in ("exact", "contains"):
        operation = "eq" if kind == "exact" else "ilike"
        return {
            "type": "string_check",
            "name": kind,
            "input": "{{sample.output_text}}",
            "reference": "{{item.reference}}",
            "operation": operation,
        }
    if kind == "classification":
        field = options.get("field")
        config: dict[str, Any] = {
            "type": "classification",
            "name": f"classification:{field}" if field else "classification",
            "input": f"{{{{sample.output_json.{field}}}}}" if field else "{{sample.output_text}}",
            "reference": f"{{{{item.expected.{field}}}}}" if field else "{{item.reference}}",
        }
        if options.get("labels"):
            config["labels"] = options["labels"].split("|")
        return config
    if kind in ("rouge_l", "bleu"):
        return {
            "type": "text_similarity",
            "name": kind,
            "input": "{{sample.output_text}}",
            "reference": "{{item.reference}}",
            "evaluation_metric": kind,
            "pass_threshold": float(options.get("threshold", 0.5)),
        }
    raise typer.BadParameter(
        f"unknown grader {kind!r}: json_valid, exact, contains, classification, rouge_l, bleu"
    )


def items_of(path: Path) -> list[dict[str, Any]]:
    """Eval items from chat examples: the prompt messages, the reference, its JSON fields."""
    items = []
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            messages = json.loads(raw)["messages"]
            reference = messages[-1]["content"]
            assert messages[-1]["role"] == "assistant" and isinstance(reference, str)
        except (ValueError, KeyError, TypeError, IndexError, AssertionError):
            fail(f"{path}:{line_no}: not a chat example ending with an assistant message", code=2)
        item: dict[str, Any] = {"messages": messages[:-1], "reference": reference}
        try:
            parsed = json.loads(reference)
        except ValueError:
            parsed = None
        item["expected"] = parsed if isinstance(parsed, dict) else {}
        items.append(item)
    if not items:
        fail(f"{path} holds no example", code=2)
    return items


def _wait(client, eval_id: str, runs: dict[str, str]) -> dict[str, Any]:
    """Follows the runs with one progress bar each until they end; their final objects by model."""
    finished: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        tasks = {model: progress.add_task(model, total=None) for model in runs}
        while len(finished) < len(runs):
            for model, run_id in runs.items():
                if model in finished:
                    continue
                run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
                counts = (run.model_extra or {}).get("progress") or {}
                progress.update(tasks[model], completed=counts.get("n_done", 0), total=counts.get("n_items"))
                if run.status in FINAL:
                    finished[model] = run
            time.sleep(1)  # a CLI polling its server, not a test
    return finished


@eval_app.command()
def run(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model under test; twice to compare two."),
    file: Path = typer.Option(..., "--file", "-f", exists=True, dir_okay=False, help="Chat JSONL examples."),
    grader: list[str] = typer.Option(
        ["json_valid", "exact"], "--grader", "-g", help="Grader spec (repeatable)."
    ),
    max_tokens: int = typer.Option(64, help="Answer budget per item."),
    pairwise: bool = typer.Option(False, help="With two models: also have the judge compare answers."),
    base_url: str | None = typer.Option(None, envvar="TUNERY_BASE_URL", help="Gateway API root (.../v1)."),
    key: str | None = typer.Option(None, "--api-key", envvar="TUNERY_API_KEY"),
) -> None:
    """Run the models on the file's examples, grade them, print the table (and the comparison)."""
    import openai

    if len(model) > 2:
        fail("at most two models: a baseline and a candidate", code=2)
    criteria = [grader_config(spec) for spec in grader]
    items = items_of(file)
    client = openai.OpenAI(base_url=api_base_url(base_url), api_key=api_key(key), max_retries=2)
    try:
        created = client.evals.create(
            name=file.stem,
            data_source_config={"type": "custom", "item_schema": {"type": "object"}},
            testing_criteria=criteria,
        )
        runs = {}
        for position, name in enumerate(model):
            # The same model twice (e.g. a determinism check) still makes two runs.
            label = name if name not in runs else f"{name} (#{position + 1})"
            data_source = {
                "type": "completions",
                "model": name,
                "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                "sampling_params": {"temperature": 0, "max_completion_tokens": max_tokens},
                "source": {"type": "file_content", "content": [{"item": item} for item in items]},
            }
            runs[label] = client.evals.runs.create(created.id, name=label, data_source=data_source).id
        finished = _wait(client, created.id, runs)
        _print_runs(criteria, finished)
        if len(model) == 2 and all(r.status == "completed" for r in finished.values()):
            comparison = client.get(
                f"/evals/{created.id}/compare",
                cast_to=object,
                options={
                    "params": {"runs": ",".join(runs.values()), **({"judge": "pairwise"} if pairwise else {})}
                },
            )
            _print_comparison(comparison)
    except openai.APIStatusError as exc:
        fail(f"{exc.status_code}: {exc.message}")
    except openai.APIConnectionError as exc:
        fail(f"cannot reach the gateway: {exc}", "start it with `tunery up` or set TUNERY_BASE_URL")
    out.print(f"eval {created.id}; reports: " + ", ".join(r.report_url for r in finished.values()))


def _print_runs(criteria: list[dict], finished: dict[str, Any]) -> None:
    table = Table(title="Pass rate per criterion")
    table.add_column("criterion")
    for name in finished:
        table.add_column(name, justify="right")
    for criterion in criteria:
        row = [criterion["name"]]
        for run in finished.values():
            summary = (
                ((run.model_extra or {}).get("aggregates") or {}).get("criteria", {}).get(criterion["name"])
            )
            rate = summary and summary.get("pass_rate")
            row.append("–" if rate is None else f"{rate:.1%}")
        table.add_row(*row)
    for run in finished.values():
        if run.status != "completed":
            out.print(f"[red]{run.name}: {run.status}[/] {run.error.message if run.error else ''}")
    out.print(table)


def _print_comparison(comparison: dict[str, Any]) -> None:
    table = Table(title=f"{comparison['candidate_model']} vs {comparison['baseline_model']} (paired, 95% CI)")
    for column in ("criterion", "baseline", "candidate", "delta", "95% CI", "p", "verdict"):
        table.add_column(column, justify="left" if column in ("criterion", "verdict") else "right")
    for entry in comparison["testing_criteria"]:
        pf = entry["pass_fail"]
        table.add_row(
            entry["testing_criteria"],
            f"{pf['baseline_rate']:.1%}",
            f"{pf['candidate_rate']:.1%}",
            f"{pf['delta']:+.1%}",
            f"[{pf['ci_low']:+.1%}, {pf['ci_high']:+.1%}]",
            f"{pf['p_value']:.3g}",
            pf["verdict"],
        )
    out.print(table)
    if pairwise := comparison.get("pairwise"):
        if "wins" in pairwise:
            out.print(
                f"judge {pairwise['judge']['model']}: {pairwise['wins']} wins, {pairwise['ties']} ties, "
                f"{pairwise['losses']} losses (p={pairwise['p_value']:.3g}, {pairwise['verdict']})"
            )
        else:
            out.print(f"judge: no verdict ({pairwise['judge_failures']} failures)")
