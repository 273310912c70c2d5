"""The Evals API on the whole stack: `tunery eval run` with two models and the pairwise judge, then
the run objects, output items and the report over HTTP."""

import json
import os
import subprocess
import sys

import httpx
import pytest
from openai import OpenAI
from stack_keys import KEYS

pytestmark = pytest.mark.e2e

MODEL = "tiny-random-llama"


def example(i: int) -> dict:
    category = ("billing", "technical")[i % 2]
    return {
        "messages": [
            {"role": "user", "content": f"Ticket {i}: route it."},
            {"role": "assistant", "content": json.dumps({"category": category})},
        ]
    }


def test_cli_runs_two_models_and_compares_them(stack, tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text("\n".join(json.dumps(example(i)) for i in range(4)) + "\n")
    env = {**os.environ, "TUNERY_BASE_URL": stack.base_url, "TUNERY_API_KEY": KEYS["org-a"], "COLUMNS": "200"}
    argv = [sys.executable, "-m", "tunery_common.cli", "eval", "run", "--model", MODEL, "--model", MODEL]
    argv += ["--file", str(data), "--grader", "json_valid", "--grader", "classification:field=category"]
    argv += ["--max-tokens", "8", "--pairwise"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Pass rate per criterion" in done.stdout and "classification:category" in done.stdout
    # The same model twice, greedily: identical answers, so no difference at all.
    assert "+0.0%" in done.stdout and "no significant difference" in done.stdout
    # The judge sees the same prompt in both orders, so it cannot prefer either side: all ties.
    assert f"judge {MODEL}: 0 wins, 4 ties, 0 losses (p=1, no significant difference)" in done.stdout

    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=60)
    evals = list(client.evals.list())
    assert evals and evals[-1].name == "tickets"
    runs = list(client.evals.runs.list(evals[-1].id))
    assert [r.status for r in runs] == ["completed", "completed"] and runs[0].result_counts.total == 4
    items = [list(client.evals.runs.output_items.list(r.id, eval_id=evals[-1].id)) for r in runs]
    assert [i.sample.output[0].content for i in items[0]] == [i.sample.output[0].content for i in items[1]]
    report = httpx.get(runs[1].report_url, headers={"Authorization": f"Bearer {KEYS['org-a']}"}, timeout=60)
    assert report.status_code == 200 and "Confusion matrix: classification:category" in report.text
    other = OpenAI(base_url=stack.base_url, api_key=KEYS["org-b"], max_retries=0, timeout=60)
    assert list(other.evals.list()) == []


def test_cli_regression_check_runs_the_general_abilities_set(stack):
    env = {**os.environ, "TUNERY_BASE_URL": stack.base_url, "TUNERY_API_KEY": KEYS["org-a"], "COLUMNS": "200"}
    # A base model's baseline is itself. Batches form differently in the two runs, which may move
    # a near-tie of the random model; --threshold 100 keeps the exit code about the run itself.
    argv = [sys.executable, "-m", "tunery_common.cli", "eval", "regression", "--model", MODEL]
    argv += ["--max-tokens", "4", "--threshold", "100"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"General abilities of {MODEL} against {MODEL}" in done.stdout
    rows = {line.split()[1]: line.split()[3:8:2] for line in done.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == {"arithmetic", "factual", "formatting", "instruction_following", "overall"}
    for base, tuned, drop in rows.values():
        assert float(drop) == pytest.approx(float(base) - float(tuned), abs=0.11)  # rounded to 0.1

    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=60)
    # Other tests on this stack (the demo) run the general-abilities check too: find this one's.
    evals = [e for e in client.evals.list() if e.name == "general abilities"]
    runs = next(
        runs
        for runs in (list(client.evals.runs.list(e.id)) for e in evals)
        if [r.model for r in runs] == [MODEL, MODEL]
    )
    assert [r.result_counts.total for r in runs] == [126, 126]
    overall = [100 * r.result_counts.passed / 126 for r in runs]
    assert [float(x) for x in rows["overall"][:2]] == [round(x, 1) for x in overall]
