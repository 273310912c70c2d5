"""A trainer process killed mid-run (SIGKILL: no checkpoint on the way out) loses nothing but the
steps after its last checkpoint: another process takes the job over once the message's ack wait
has passed, resumes from that checkpoint and recomputes those steps exactly."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bus_helpers import upload, wait_status
from trainer_harness import chat_example, job_events, method, trainer_services
from tunery.events.v1 import events_pb2
from tunery_common.natsserver import free_port

CHECKPOINT_EVERY = 10
N_EXAMPLES = 48  # batch 2, 2 epochs: 48 steps


@pytest.fixture
async def trainer(nats_url, model_cache, tmp_path):
    async with trainer_services(nats_url, model_cache, tmp_path / "work") as services:
        yield services


def start_trainer(nats_url: str, model_cache: Path, home: Path, name: str) -> subprocess.Popen:
    """`python -m tunery_trainer.main` as the launcher runs it, with a short ack wait."""
    env = {
        **os.environ,
        "TUNERY_HOME": str(home),
        "TUNERY_NATS_URL": nats_url,
        "TUNERY_MODEL_CACHE": str(model_cache),
        "TUNERY_TRAINER_ADDR": f"127.0.0.1:{free_port()}",
        "TUNERY_DATAPREP_ADDR": f"127.0.0.1:{free_port()}",  # jobs arrive validated
        "TUNERY_TRAINER_DEVICES": "cpu",  # one worker, on the CPU
        "TUNERY_TRAINER_ACK_WAIT_S": "5",
        "TUNERY_TRAINER_HEARTBEAT_S": "1",
        "TUNERY_LOG_JSON": "false",
        "OMP_NUM_THREADS": "1",  # the same numerics in both processes
        "PYTHONUNBUFFERED": "1",
    }
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tunery_trainer.main"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def test_a_killed_trainer_resumes_exactly_from_its_last_checkpoint(
    trainer, nats_url, model_cache, tmp_path
):
    bus = trainer.bus
    await upload(bus, "acme", "file-train", [chat_example(i) for i in range(N_EXAMPLES)])
    job = await trainer.create(
        training_file="file-train",
        seed=11,
        method=method(n_epochs=2, batch_size=2, eval_every_steps=1, checkpoint_every_steps=CHECKPOINT_EVERY),
    )
    await wait_status(bus, "acme", job.id, {"queued"})

    reports: asyncio.Queue[int] = asyncio.Queue()

    async def on_metrics(event: events_pb2.Event) -> None:
        await reports.put(int(event.data["step"]))

    subscription = await bus.subscribe_events(f"tunery.events.job.{job.id}.metrics", on_metrics)
    first = start_trainer(nats_url, model_cache, tmp_path / "home", "first")
    second = None
    try:
        # The step after the first checkpoint: that checkpoint is persisted (its hook returned
        # before this step ran) and the next one is CHECKPOINT_EVERY - 1 steps away.
        async with asyncio.timeout(600):
            while await reports.get() != CHECKPOINT_EVERY + 1:
                pass
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait)
        await subscription.unsubscribe()

        killed = await bus.jobs.get("acme", job.id)
        assert killed.status == "running"  # as the dead worker left it
        resume_step = next(c.step_number for c in reversed(killed.checkpoints) if c.state_object)
        killed_reports = {
            int(e.data["step"]): dict(e.data) for e in await job_events(bus, job.id) if e.what == "metrics"
        }
        recomputed = [step for step in killed_reports if step > resume_step]
        assert resume_step % CHECKPOINT_EVERY == 0 and recomputed

        second = start_trainer(nats_url, model_cache, tmp_path / "home", "second")
        done = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
        assert done["status"] == "succeeded", done["error"]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 60)

    events = await job_events(bus, job.id)
    whats = [e.what for e in events]
    resumed_at = whats.index("resumed")
    assert int(events[resumed_at].data["step"]) == resume_step
    assert f"step {resume_step}" in events[resumed_at].message
    after = [dict(e.data) for e in events[resumed_at:] if e.what == "metrics"]
    assert [int(r["step"]) for r in after] == list(range(resume_step + 1, N_EXAMPLES + 1))
    # Exact resume: the steps both runs trained have the same losses, rates and token counts.
    for report in after:
        step = int(report["step"])
        if step in killed_reports:
            before = killed_reports[step]
            for key in ("train_loss", "train_mean_token_accuracy", "learning_rate", "trained_tokens"):
                assert report[key] == before[key], (step, key)
    assert {int(r["step"]) for r in after} >= set(recomputed)
    assert done["trained_tokens"] == int(after[-1]["trained_tokens"])
