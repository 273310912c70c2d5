"""`tunery models parity` on a tiny model fine-tuned briefly (fp32, on CPU) through the whole stack:
the serving engine's greedy answers are the PEFT-in-transformers reference's, token for token."""

import json

import pytest
from openai import OpenAI
from record_wait import wait_for_record
from stack_keys import KEYS
from tunery_common.cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.e2e

COLORS = ["red", "green", "blue", "yellow"]


def example(i: int) -> str:
    color = COLORS[i % len(COLORS)]
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Item {i} is {color}. What colour is item {i}?"},
                {"role": "assistant", "content": json.dumps({"color": color})},
            ]
        }
    )


@pytest.fixture(scope="module")
def trained_model(stack) -> str:
    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=300)
    train = client.files.create(
        file=("train.jsonl", "\n".join(example(i) for i in range(32)).encode()), purpose="fine-tune"
    )
    valid = client.files.create(
        file=("valid.jsonl", "\n".join(example(i) for i in range(100, 108)).encode()), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=train.id,
        validation_file=valid.id,
        suffix="parity",
        seed=5,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 10}
            },
        },
    )
    record = wait_for_record(stack, "jobs", "org-a", job.id, ("succeeded", "failed", "cancelled"))
    assert record["status"] == "succeeded", record
    return client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model


def parity(stack, model_cache, *args: str):
    env = {
        "TUNERY_BASE_URL": stack.base_url,
        "TUNERY_API_KEY": KEYS["org-a"],
        "TUNERY_MODEL_CACHE": str(model_cache),
    }
    result = CliRunner().invoke(app, ["models", "parity", *args], env=env)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_served_answers_are_the_reference_answers_token_for_token(stack, trained_model, model_cache):
    result = parity(stack, model_cache, trained_model, "--json", "--max-tokens", "12")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 8 and "validation file" in report["prompts"]  # the job's, all 8 of them
    # fp32 on both sides, and a trained adapter whose answers are far from ties: equal tokens.
    assert (report["exact_match_rate"], report["mean_common_prefix"], report["passed"]) == (1.0, 1.0, True)
    items = report["items"]
    assert all(item["exact"] and item["reference"] == item["served"] for item in items)
    assert all(item["tokens"] > 1 for item in items)
    # The adapter changes the answers: the comparison is not of the base model with itself.
    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=300)
    base = [
        client.chat.completions.create(
            model="tiny-random-llama", messages=item["messages"], max_tokens=12, temperature=0
        )
        .choices[0]
        .message.content
        for item in items
    ]
    assert all(answer != item["served"] for answer, item in zip(base, items, strict=True))


def test_prompts_from_a_file_and_a_table(stack, trained_model, model_cache, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(example(i) for i in range(200, 203)) + "\n")
    result = parity(
        stack, model_cache, trained_model, "--file", str(prompts), "--n", "2", "--min-agreement", "1"
    )
    assert result.exit_code == 0, result.output
    assert "exact match: 1.00 of 2 completions" in result.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text(example(1) + "\n" + '{"prompt": "no messages"}\n')
    result = parity(stack, model_cache, trained_model, "--file", str(bad))
    assert result.exit_code == 2 and f"{bad}:2: not a chat example" in result.output
    result = parity(stack, model_cache, "tiny-random-llama", "--file", str(prompts))
    assert result.exit_code == 1 and "only fine-tuned models" in result.output
