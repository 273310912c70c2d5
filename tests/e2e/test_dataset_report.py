"""The dataset report and cost estimate through the whole stack: openai upload, then plain HTTP."""

import json

import httpx
import pytest
from openai import OpenAI
from stack_keys import KEYS

pytestmark = pytest.mark.e2e


def example(i: int) -> dict:
    label = ["billing", "shipping", "account", "other"][i % 4]
    return {
        "messages": [
            {"role": "system", "content": "Classify the support ticket."},
            {"role": "user", "content": f"Ticket {i}: something about my {label} needs a look."},
            {"role": "assistant", "content": label},
        ]
    }


def jsonl(rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"


def post(stack, path: str, body, org: str = "org-a") -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}{path}", json=body, headers={"Authorization": f"Bearer {KEYS[org]}"}, timeout=120
    )


@pytest.fixture(scope="module")
def files(stack) -> tuple[str, str]:
    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=60)
    rows = [example(i) for i in range(60)] + ['{"messages": [{"role": "robot", "content": "hi"}]}']
    train = client.files.create(file=("train.jsonl", jsonl(rows)), purpose="fine-tune")
    valid = client.files.create(
        file=("valid.jsonl", jsonl(example(i) for i in range(100, 110))), purpose="fine-tune"
    )
    return train.id, valid.id


def test_the_report_of_an_uploaded_file(stack, files):
    train, valid = files
    answer = post(stack, "/datasets/validate", {"file_id": train, "validation_file_id": valid})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["model"] == "smollm2-135m-instruct"
    assert (report["n_examples"], report["n_valid_examples"]) == (61, 60)
    assert report["format_errors"] == {"unrecognized_role": 1, "example_missing_assistant_message": 1}
    assert report["errors"][0]["line"] == 61 and report["errors"][0]["path"] == "messages[0]"
    assert report["n_epochs"] == 3 and report["estimated_trained_tokens"] == 3 * report["tokens"]["billing"]
    assert report["task"] == "classification"
    assert report["validation"]["n_examples"] == 10
    assert {c["backend"] for c in report["cost_estimates"]} >= {"gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo"}


def test_cost_estimate_by_file_and_by_numbers(stack, files):
    train, _ = files
    by_file = post(
        stack,
        "/cost/estimate",
        {
            "file_id": train,
            "requests_per_day": 1000,
            "input_tokens_per_request": 300,
            "output_tokens_per_request": 50,
        },
    )
    assert by_file.status_code == 200, by_file.text
    estimate = by_file.json()
    assert estimate["n_examples"] == 60 and estimate["trained_tokens"] == 3 * estimate["billing_tokens"]
    monthly = estimate["inference_monthly"]
    assert monthly["base"]["model"] == "gpt-4o"
    assert any(m["saving_usd_per_month"] > 0 for m in monthly["fine_tuned"])
    self_hosted = [c for c in estimate["training"] if c["kind"] == "self_hosted"]
    assert self_hosted and all(c["gpu_hours"] > 0 for c in self_hosted)

    by_numbers = post(stack, "/cost/estimate", {"n_examples": 500, "tokens_per_example": 400, "n_epochs": 2})
    assert by_numbers.status_code == 200, by_numbers.text
    assert by_numbers.json()["trained_tokens"] == 400_000


def test_another_org_and_bad_bodies(stack, files):
    train, _ = files
    other = post(stack, "/datasets/validate", {"file_id": train}, org="org-b")
    assert other.status_code == 404 and other.json()["error"]["param"] == "file_id"
    assert post(stack, "/cost/estimate", {"file_id": train}, org="org-b").status_code == 404

    missing = post(stack, "/datasets/validate", {"model": "smollm2-135m-instruct"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file_id"
    unknown = post(stack, "/datasets/validate", {"file_id": train, "colour": "red"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
    model = post(stack, "/datasets/validate", {"file_id": train, "model": "gpt-9"})
    assert model.status_code == 400 and model.json()["error"]["param"] == "model"
    task = post(stack, "/datasets/validate", {"file_id": train, "task": "poetry"})
    assert task.status_code == 400 and task.json()["error"]["param"] == "task"
    epochs = post(stack, "/cost/estimate", {"file_id": train, "n_epochs": 0})
    assert epochs.status_code == 400 and epochs.json()["error"]["param"] == "n_epochs"
    nothing = post(stack, "/cost/estimate", {})
    assert nothing.status_code == 400 and nothing.json()["error"]["param"] == "file_id"
    no_key = httpx.post(f"{stack.base_url}/datasets/validate", json={"file_id": train})
    assert no_key.status_code == 401
