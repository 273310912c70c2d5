"""`tunery data`: exit codes 0 / 1 / 2, the JSON report, and the preparation helpers wired in."""

import json

import pytest
from tunery_common.cli import app
from typer.testing import CliRunner


def chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Is order {i} late?"},
            {"role": "assistant", "content": "yes" if i % 2 else "no"},
        ]
    }


@pytest.fixture
def runner(monkeypatch, model_cache):
    monkeypatch.setenv("TUNERY_MODEL_CACHE", str(model_cache))
    return CliRunner()


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(chat(i)) for i in range(40)) + "\n")
    return path


def test_a_valid_file_exits_0_with_a_readable_report(runner, train):
    result = runner.invoke(app, ["data", "validate", str(train)])
    assert result.exit_code == 0, result.output
    assert "40 examples" in result.output and "no errors" in result.output


def test_errors_exit_1_and_json_parses(runner, train, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(train.read_text() + '{"messages": [{"role": "bot", "content": "x"}]}\n')
    result = runner.invoke(app, ["data", "validate", str(bad), "--json", "--validation-file", str(train)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["format_errors"] == {"unrecognized_role": 1, "example_missing_assistant_message": 1}
    assert report["errors"][0]["line"] == 41
    assert report["validation"]["n_valid_examples"] == 40
    assert {
        "n_examples",
        "tokens",
        "n_epochs",
        "estimated_trained_tokens",
        "cost_estimates",
        "warnings",
    } <= set(report)


@pytest.mark.parametrize(
    "args",
    [
        ["missing.jsonl"],
        ["{train}", "--model", "gpt-9"],
        ["{train}", "--task", "poetry"],
        ["{train}", "--validation-file", "nope.jsonl"],
    ],
)
def test_usage_errors_exit_2(runner, train, args):
    result = runner.invoke(app, ["data", "validate", *(a.format(train=train) for a in args)])
    assert result.exit_code == 2, result.output


def test_convert_split_and_mix(runner, tmp_path, train):
    csv = tmp_path / "tickets.csv"
    csv.write_text("question,answer\nWhere is my parcel?,On its way.\nCan I pay later?,Yes.\n")
    out = tmp_path / "chat.jsonl"
    result = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(csv),
            "-o",
            str(out),
            "--prompt-col",
            "question",
            "--completion-col",
            "answer",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text().splitlines()[0])["messages"][0]["content"] == "Where is my parcel?"

    split = tmp_path / "split"
    result = runner.invoke(
        app, ["data", "split", str(train), "--validation-fraction", "0.2", "--seed", "1", "-o", str(split)]
    )
    assert result.exit_code == 0, result.output
    assert (split / "train.jsonl").exists() and (split / "validation.jsonl").exists()

    mixed = tmp_path / "mixed.jsonl"
    result = runner.invoke(
        app, ["data", "mix", str(train), "--general", str(out), "--fraction", "0.04", "-o", str(mixed)]
    )
    assert result.exit_code == 0, result.output
    assert len(mixed.read_text().splitlines()) == 42


def test_preparation_errors_exit_1_and_bad_fractions_2(runner, tmp_path, train):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{nope\n")
    result = runner.invoke(app, ["data", "convert", str(broken), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "line 1" in result.output
    result = runner.invoke(
        app, ["data", "split", str(train), "--validation-fraction", "1.5", "-o", str(tmp_path)]
    )
    assert result.exit_code == 2
