"""Quick evals over HTTP on the whole stack: upload → POST /v1/quick_evals → worker → results."""

import json
from statistics import mean

import httpx
import pytest
from openai import OpenAI
from record_wait import wait_for_record
from stack_keys import KEYS

pytestmark = pytest.mark.e2e

RESULT_KEYS = {"index", "line", "prompt", "expected", "output", "exact_match", "json_valid", "latency_ms"}


def example(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Item {i} as JSON?"},
            {"role": "assistant", "content": json.dumps({"item": i})},
        ]
    }


def jsonl(rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"


def api(stack, method: str, path: str, org: str = "org-a", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEYS[org]}"}
    return httpx.request(method, f"{stack.base_url}{path}", headers=headers, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def evals_file(stack):
    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=300)
    return client.files.create(file=("evals.jsonl", jsonl(example(i) for i in range(6))), purpose="evals")


@pytest.fixture(scope="module")
def finished_eval(stack, evals_file) -> dict:
    body = {"model": "tiny-random-llama", "file_id": evals_file.id, "max_tokens": 8}
    response = api(stack, "POST", "/quick_evals", json=body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["object"] == "quick_eval" and created["id"].startswith("qeval-")
    assert (created["status"], created["n_items"], created["n_done"]) == ("queued", 6, 0)
    assert created["exact_match_rate"] is None and created["results"] is None and created["error"] is None
    wait_for_record(stack, "evals", "org-a", created["id"], {"succeeded", "failed"})
    return api(stack, "GET", f"/quick_evals/{created['id']}").json()


def test_quick_eval_succeeds_with_consistent_results(finished_eval, evals_file):
    qeval = finished_eval
    assert qeval["status"] == "succeeded", qeval["error"]
    assert (qeval["model"], qeval["file_id"]) == ("tiny-random-llama", evals_file.id)
    assert qeval["n_done"] == qeval["n_items"] == 6 and qeval["finished_at"] >= qeval["created_at"]
    results = qeval["results"]
    assert [r["index"] for r in results] == list(range(6))
    for i, r in enumerate(results):
        assert RESULT_KEYS <= set(r)
        assert (r["line"], r["prompt"], r["expected"]) == (
            i + 1,
            f"Item {i} as JSON?",
            json.dumps({"item": i}),
        )
        assert isinstance(r["output"], str) and r["output"]
    assert qeval["exact_match_rate"] == pytest.approx(mean(r["exact_match"] for r in results))
    assert qeval["json_valid_rate"] == pytest.approx(mean(r["json_valid"] for r in results))


def test_events_and_list(stack, finished_eval):
    qeval_id = finished_eval["id"]
    events = api(stack, "GET", f"/quick_evals/{qeval_id}/events", params={"limit": 100}).json()["data"]
    assert events[0]["message"].startswith("Quick eval finished") and events[-1]["message"].startswith(
        "Created"
    )
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)
    progress = [e for e in events if e["type"] == "metrics"]
    assert progress and progress[0]["data"]["n_done"] == 6
    assert {"n_done", "n_items", "exact_match_rate", "json_valid_rate", "elapsed_s", "eta_s"} <= set(
        progress[0]["data"]
    )
    page = api(stack, "GET", f"/quick_evals/{qeval_id}/events", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"]

    listed = api(stack, "GET", "/quick_evals", params={"limit": 10}).json()
    assert listed["object"] == "list"
    assert qeval_id in [e["id"] for e in listed["data"]]


def test_another_org_sees_nothing(stack, finished_eval, evals_file):
    qeval_id = finished_eval["id"]
    for path in (f"/quick_evals/{qeval_id}", f"/quick_evals/{qeval_id}/events"):
        assert api(stack, "GET", path, org="org-b").status_code == 404
    assert qeval_id not in [e["id"] for e in api(stack, "GET", "/quick_evals", org="org-b").json()["data"]]
    response = api(
        stack,
        "POST",
        "/quick_evals",
        org="org-b",
        json={"model": "tiny-random-llama", "file_id": evals_file.id},
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "file_id"


def test_bad_requests_get_openai_errors(stack, evals_file):
    def error(body: dict, status: int, param: str) -> dict:
        response = api(stack, "POST", "/quick_evals", json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
        return response.json()["error"]

    error({"model": "no-such-model", "file_id": evals_file.id}, 404, "model")
    error({"model": "tiny-random-llama", "file_id": "file-missing"}, 404, "file_id")
    error({"model": "tiny-random-llama", "file_id": evals_file.id, "max_items": 0}, 400, "max_items")
    client = OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0)
    bad = client.files.create(file=("bad.jsonl", jsonl([example(0), "{not json"])), purpose="evals")
    message = error({"model": "tiny-random-llama", "file_id": bad.id}, 400, "file_id")["message"]
    assert message.startswith("line 2: ")
