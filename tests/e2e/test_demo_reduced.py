"""`make demo` in small: the real smollm2-135m-instruct learns the ticket JSON in one short epoch."""

import io
from pathlib import Path

import pytest
from rich.console import Console
from stack_keys import KEYS
from tunery_common.demo import run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET = Path(__file__).resolve().parents[2] / "examples" / "support_tickets"


def head(src: Path, n: int, out: Path) -> Path:
    out.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return out


def test_fine_tuning_makes_the_model_answer_in_json(stack, tmp_path):
    train = head(DATASET / "train.jsonl", 48, tmp_path / "train.jsonl")
    heldout = head(DATASET / "heldout.jsonl", 20, tmp_path / "heldout.jsonl")
    output = io.StringIO()
    figures = run_demo(
        stack.base_url,
        KEYS["org-a"],
        train,
        heldout,
        "smollm2-135m-instruct",
        {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
        Console(file=output, width=160),
    )
    print(output.getvalue())  # the demo's tables, shown by pytest -s and in failure reports
    assert figures["tuned_json_valid_rate"] >= 0.9
    assert figures["tuned_json_valid_rate"] > figures["base_json_valid_rate"]
    # 20 paired items from (near) 0% to 90%+: McNemar's exact test calls it.
    assert figures["json_valid_verdict"] == "better" and figures["json_valid_p_value"] < 0.01
    assert figures["tuned_category_accuracy"] > figures["base_category_accuracy"]
    drops = figures["general_abilities_drop"]
    assert set(drops) == {"arithmetic", "instruction_following", "formatting", "factual", "overall"}
