"""The backbone path with the official openai client: upload → job → events → model → chat,
checkpoints and the result file, pause and resume."""

import csv
import io
import json

import httpx
import openai
import pytest
from openai import OpenAI
from record_wait import wait_for_record, wait_for_record_where
from stack_keys import KEYS

pytestmark = pytest.mark.e2e

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]


def example(i: int) -> dict:
    color = COLORS[i % len(COLORS)]
    return {
        "messages": [
            {"role": "system", "content": "Answer with JSON."},
            {"role": "user", "content": f"What colour is item {i}? It is {color}."},
            {"role": "assistant", "content": json.dumps({"color": color})},
        ]
    }


def jsonl(rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"


def wait_for_job(
    stack, org: str, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=600
) -> dict:
    return wait_for_record(stack, "jobs", org, job_id, statuses, timeout)


@pytest.fixture(scope="module")
def client_a(stack) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key=KEYS["org-a"], max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def client_b(stack) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key=KEYS["org-b"], max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def finished_job(stack, client_a):
    train = client_a.files.create(
        file=("train.jsonl", jsonl(example(i) for i in range(32))), purpose="fine-tune"
    )
    valid = client_a.files.create(
        file=("valid.jsonl", jsonl(example(i) for i in range(100, 112))), purpose="fine-tune"
    )
    job = client_a.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=train.id,
        validation_file=valid.id,
        suffix="e2e",
        seed=3,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8, "checkpoint_every_steps": 3}},
        },
        metadata={"purpose": "e2e"},
    )
    assert job.status == "validating_files"
    assert job.model == "tiny-random-llama"
    wait_for_job(stack, "org-a", job.id)
    return {"train": train, "valid": valid, "job": client_a.fine_tuning.jobs.retrieve(job.id)}


def test_job_succeeds_with_metrics_and_a_model(client_a, finished_job):
    job = finished_job["job"]
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-random-llama:org-a:e2e:{job.id}"
    assert job.trained_tokens > 0
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 8
    assert job.metadata == {"purpose": "e2e"}

    events = client_a.fine_tuning.jobs.list_events(job.id, limit=100).data
    created = [e.created_at for e in events]
    assert created == sorted(created, reverse=True)  # newest first
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics, [e.message for e in events]
    for event in metrics:
        assert {"step", "train_loss", "valid_loss"} <= set(event.data)
    assert events[0].message.startswith("The job has successfully completed")

    page = client_a.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    jobs = client_a.fine_tuning.jobs.list(limit=10).data
    assert job.id in [j.id for j in jobs]


def test_model_is_listed_and_chats(stack, client_a, finished_job):
    model_id = finished_job["job"].fine_tuned_model
    models = {m.id: m for m in client_a.models.list().data}
    assert {"smollm2-135m-instruct", "tiny-random-llama", model_id} <= set(models)
    assert client_a.models.retrieve(model_id).model_dump().get("parent") == "tiny-random-llama"

    reply = client_a.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "What colour is item 7?"}],
        max_tokens=12,
        temperature=0,
    )
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stream = client_a.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "What colour is item 7?"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # greedy: same answer streamed
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    )

    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {KEYS['org-a']}"},
        json={
            "model": model_id,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "stream": True,
        },
        timeout=120,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"


def test_checkpoints_are_listed_and_answer_chat(client_a, client_b, finished_job):
    job = finished_job["job"]
    # 8 steps (2 epochs of 4): every 3 steps and at each epoch end, newest first.
    checkpoints = client_a.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [8, 6, 4, 3]
    for checkpoint in checkpoints:
        assert (
            checkpoint.fine_tuned_model_checkpoint
            == f"{job.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        )
        assert checkpoint.metrics.step == checkpoint.step_number
        assert checkpoint.metrics.train_loss > 0 and checkpoint.metrics.valid_loss > 0
    page = client_a.fine_tuning.jobs.checkpoints.list(job.id, limit=1, after=checkpoints[0].id)
    assert [c.id for c in page.data] == [checkpoints[1].id] and page.has_more

    earliest = checkpoints[-1].fine_tuned_model_checkpoint
    reply = client_a.chat.completions.create(
        model=earliest,
        messages=[{"role": "user", "content": "What colour is item 7?"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.model == earliest and reply.usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client_b.fine_tuning.jobs.checkpoints.list(job.id)
    with pytest.raises(openai.NotFoundError):
        client_b.chat.completions.create(model=earliest, messages=[{"role": "user", "content": "hi"}])


def test_result_file_holds_every_metrics_report(client_a, finished_job):
    job = finished_job["job"]
    [file_id] = job.result_files
    info = client_a.files.retrieve(file_id)
    assert (info.filename, info.purpose) == ("step_metrics.csv", "fine-tune-results")
    rows = list(csv.DictReader(io.StringIO(client_a.files.content(file_id).text)))
    assert list(rows[0])[:5] == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    reports = {
        e.data["step"]: e.data
        for e in client_a.fine_tuning.jobs.list_events(job.id, limit=1000).data
        if e.type == "metrics"
    }
    assert sorted(int(r["step"]) for r in rows) == sorted(int(step) for step in reports)
    for row in rows:
        assert float(row["train_loss"]) == reports[float(row["step"])]["train_loss"]


def test_pause_then_resume_finishes_from_the_checkpoint(stack, client_a, finished_job):
    train = finished_job["train"]
    # 96 steps, paused once the first checkpoint (step 2) is saved: far from the end.
    job = client_a.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=train.id,
        seed=5,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 1, "checkpoint_every_steps": 2}},
        },
    )
    wait_for_record_where(stack, "jobs", "org-a", job.id, lambda r: bool(r["checkpoints"]))
    assert client_a.fine_tuning.jobs.pause(job.id).status == "paused"
    paused = wait_for_record_where(stack, "jobs", "org-a", job.id, lambda r: r["lease_owner"] is None)
    assert paused["status"] == "paused"
    saved = client_a.fine_tuning.jobs.checkpoints.list(job.id).data
    assert saved and saved[0].step_number == max(c["step_number"] for c in paused["checkpoints"])
    with pytest.raises(openai.ConflictError):
        client_a.fine_tuning.jobs.resume(finished_job["job"].id)

    assert client_a.fine_tuning.jobs.resume(job.id).status == "queued"
    wait_for_job(stack, "org-a", job.id)
    done = client_a.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    events = client_a.fine_tuning.jobs.list_events(job.id, limit=1000).data[::-1]  # oldest first
    resumed = next(e for e in events if e.message.startswith("Resuming from the checkpoint"))
    assert f"step {saved[0].step_number}" in resumed.message
    after = [int(e.data["step"]) for e in events[events.index(resumed) :] if e.type == "metrics"]
    assert after[0] > saved[0].step_number and after[-1] == 96


def test_another_org_sees_nothing(client_b, finished_job):
    job, train = finished_job["job"], finished_job["train"]
    with pytest.raises(openai.NotFoundError):
        client_b.files.retrieve(train.id)
    with pytest.raises(openai.NotFoundError):
        client_b.files.content(train.id)
    with pytest.raises(openai.NotFoundError):
        client_b.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        client_b.fine_tuning.jobs.list_events(job.id)
    with pytest.raises(openai.NotFoundError):
        client_b.models.retrieve(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        client_b.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
        )
    assert job.fine_tuned_model not in [m.id for m in client_b.models.list().data]
    assert train.id not in [f.id for f in client_b.files.list().data]


def test_invalid_training_file_fails_the_job_with_its_line(stack, client_a):
    rows = [example(i) for i in range(12)] + ['{"messages": [{"role": "user", "content": "no answer"}]}']
    bad = client_a.files.create(file=("bad.jsonl", jsonl(rows)), purpose="fine-tune")
    job = client_a.fine_tuning.jobs.create(model="tiny-random-llama", training_file=bad.id)
    wait_for_job(stack, "org-a", job.id)
    job = client_a.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "failed"
    assert job.error.code == "invalid_training_file"
    assert job.error.param == "training_file"
    assert job.error.message.startswith("line 13: ")


def test_bad_requests_get_openai_errors(stack, client_a):
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=stack.base_url, api_key="wrong", max_retries=0).models.list()
    train = client_a.files.create(file=("t.jsonl", jsonl(example(i) for i in range(12))), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        client_a.fine_tuning.jobs.create(model="gpt-unknown", training_file=train.id)
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client_a.fine_tuning.jobs.create(model="tiny-random-llama", training_file="file-missing")
    with pytest.raises(openai.BadRequestError) as info:
        client_a.fine_tuning.jobs.create(
            model="tiny-random-llama",
            training_file=train.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "many"}}},
        )
    assert info.value.body["param"].startswith("method.supervised.hyperparameters.n_epochs")
    with pytest.raises(openai.APIStatusError) as info:
        client_a.files.create(file=("big.jsonl", b"x" * (3 << 20)), purpose="fine-tune")
    assert info.value.status_code == 413
    with pytest.raises(openai.NotFoundError):
        client_a.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    raw = httpx.post(
        f"{stack.base_url}/fine_tuning/jobs",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEYS['org-a']}", "Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and "error" in raw.json()
