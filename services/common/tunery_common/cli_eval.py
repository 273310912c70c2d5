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
progress_out = Console(stderr=True)
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


def _wait(client, eval_id: str, runs: dict[str, str], console: Console) -> dict[str, Any]:
    """Follows the runs with one progress bar each until they end; their final objects by model."""
    finished: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
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


def completions_source(model: str, source: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A `completions` run data source: greedy answers to each item's `messages`."""
    return {
        "type": "completions",
        "model": model,
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "sampling_params": {"temperature": 0, "max_completion_tokens": max_tokens},
        "source": source,
    }


def run_models(
    client,
    name: str,
    models: list[str],
    source: dict[str, Any],
    criteria: list[dict],
    max_tokens: int,
    console: Console = progress_out,
) -> tuple[str, dict[str, Any]]:
    """One eval, one run per model over `source`, followed to the end: (eval id, final runs by label)."""
    created = client.evals.create(
        name=name,
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=criteria,
    )
    runs = {}
    for position, model in enumerate(models):
        # The same model twice (e.g. a determinism check) still makes two runs.
        label = model if model not in runs else f"{model} (#{position + 1})"
        data_source = completions_source(model, source, max_tokens)
        runs[label] = client.evals.runs.create(created.id, name=label, data_source=data_source).id
    return created.id, _wait(client, created.id, runs, console)


def compare(client, eval_id: str, baseline, candidate, pairwise: bool = False) -> dict[str, Any]:
    """`GET /v1/evals/{id}/compare` of two finished runs."""
    params = {"runs": f"{baseline.id},{candidate.id}", **({"judge": "pairwise"} if pairwise else {})}
    return client.get(f"/evals/{eval_id}/compare", cast_to=object, options={"params": params})


def _gateway_errors(action):
    import openai

    try:
        return action()
    except openai.APIStatusError as exc:
        fail(f"{exc.status_code}: {exc.message}")
    except openai.APIConnectionError as exc:
        fail(f"cannot reach the gateway: {exc}", "start it with `tunery up` or set TUNERY_BASE_URL")


def _client(base_url: str | None, key: str | None):
    import openai

    return openai.OpenAI(base_url=api_base_url(base_url), api_key=api_key(key), max_retries=2)


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
    if len(model) > 2:
        fail("at most two models: a baseline and a candidate", code=2)
    criteria = [grader_config(spec) for spec in grader]
    source = {"type": "file_content", "content": [{"item": item} for item in items_of(file)]}
    client = _client(base_url, key)

    def go() -> tuple[str, dict[str, Any]]:
        eval_id, finished = run_models(client, file.stem, model, source, criteria, max_tokens)
        print_runs(criteria, finished)
        if len(model) == 2 and all(r.status == "completed" for r in finished.values()):
            print_comparison(compare(client, eval_id, *finished.values(), pairwise=pairwise))
        return eval_id, finished

    eval_id, finished = _gateway_errors(go)
    out.print(f"eval {eval_id}; reports: " + ", ".join(r.report_url for r in finished.values()))


@eval_app.command()
def regression(
    model: str = typer.Option(..., "--model", "-m", help="The fine-tuned model to check."),
    base: str | None = typer.Option(None, help="The model to compare with; default: the model's base."),
    threshold: float = typer.Option(
        5.0, min=0, max=100, help="Points a category may lose before it is flagged."
    ),
    max_tokens: int = typer.Option(48, help="Answer budget per item."),
    base_url: str | None = typer.Option(None, envvar="TUNERY_BASE_URL", help="Gateway API root (.../v1)."),
    key: str | None = typer.Option(None, "--api-key", envvar="TUNERY_API_KEY"),
) -> None:
    """Did fine-tuning cost general abilities? The shipped general-abilities set on both models.

    Exits 1 when a category dropped by more than the threshold (for pipelines).
    """
    client = _client(base_url, key)

    def go() -> dict[str, Any]:
        baseline = base or client.models.retrieve(model).model_extra.get("parent") or model
        return check_general_abilities(client, baseline, model, threshold, max_tokens)

    regression_report = _gateway_errors(go)
    if regression_report is None:
        fail("a run did not complete; see the table above")
    if regression_report["flagged"]:
        raise typer.Exit(1)


def check_general_abilities(
    client,
    base: str,
    model: str,
    threshold: float = 5.0,
    max_tokens: int = 48,
    console: Console = out,
    progress: Console = progress_out,
) -> dict[str, Any] | None:
    """Both models on the general-abilities set; the per-category drop report (None if a run failed)."""
    criteria = [{"type": "item_check", "name": "general abilities", "drop_threshold": threshold}]
    source = {"type": "general_abilities"}
    eval_id, finished = run_models(
        client, "general abilities", [base, model], source, criteria, max_tokens, progress
    )
    if not all(r.status == "completed" for r in finished.values()):
        print_runs(criteria, finished, console)
        return None
    report = compare(client, eval_id, *finished.values())["testing_criteria"][0]["categories"]
    print_regression(base, model, report, console)
    return report


def print_regression(base: str, model: str, report: dict[str, Any], console: Console = out) -> None:
    console.print(f"General abilities of {model} against {base} (scores 0-100):")
    table = Table()
    for column in ("category", "base", "fine-tuned", "drop", ""):
        table.add_column(column, justify="left" if column in ("category", "") else "right")
    for entry in [*report["categories"], report["overall"]]:
        table.add_row(
            entry["category"],
            f"{entry['base_score']:.1f}",
            f"{entry['score']:.1f}",
            f"{entry['drop']:+.1f}",
            "[red]dropped[/]" if entry["flagged"] else "",
        )
    console.print(table)
    if report["advice"]:
        console.print(f"[yellow]{report['advice']}[/]")


def print_runs(criteria: list[dict], finished: dict[str, Any], console: Console = out) -> None:
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
            console.print(f"[red]{run.name}: {run.status}[/] {run.error.message if run.error else ''}")
    console.print(table)


def print_comparison(comparison: dict[str, Any], console: Console = out) -> None:
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
    console.print(table)
    if pairwise := comparison.get("pairwise"):
        if "wins" in pairwise:
            console.print(
                f"judge {pairwise['judge']['model']}: {pairwise['wins']} wins, {pairwise['ties']} ties, "
                f"{pairwise['losses']} losses (p={pairwise['p_value']:.3g}, {pairwise['verdict']})"
            )
        else:
            console.print(f"judge: no verdict ({pairwise['judge_failures']} failures)")
