"""A training worker: pulls jobs from the JetStream work queue and trains them one at a time.

The job message stays un-acked while training; `in_progress()` heartbeats keep JetStream from
redelivering it, and a lease in the job record (compare-and-set) makes sure a redelivered message
never starts a second run while the first one's lease is alive. A killed worker stops
heartbeating: its job is redelivered after `ack_wait` and its lease has expired by then.
"""

import asyncio
import logging
import shutil
import threading
import time
from pathlib import Path

from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import TRAIN_STREAM, TRAIN_SUBJECT, Bus, make_event
from tunery_common.ids import new_id
from tunery_common.leases import Lease
from tunery_common.records import JobError, JobRecord
from tunery_common.workqueue import pull_work

from tunery_trainer.data import load_jsonl_examples, tokenize_example
from tunery_trainer.hyperparams import BASE_LEARNING_RATE, Hyperparameters, resolve
from tunery_trainer.jobref import JobRef
from tunery_trainer.loop import train_lora
from tunery_trainer.publish import publish_adapter
from tunery_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

DURABLE = "trainer-workers"


class JobCancelled(Exception):
    pass


class TrainWorker:
    def __init__(self, bus: Bus, settings: TrainerSettings, work_dir: Path, model_cache: Path):
        self.bus = bus
        self.settings = settings
        self.work_dir = work_dir
        self.model_cache = model_cache
        self.worker_id = new_id("worker")
        self.lease_s = settings.ack_wait_s

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s waiting for jobs", self.worker_id)
        queue = pull_work(self.bus.js, TRAIN_STREAM, TRAIN_SUBJECT, DURABLE, self.settings.ack_wait_s, stop)
        async for msg in queue:
            await self.handle(msg, stop)

    def lease(self, ref: JobRef) -> Lease:
        return Lease(self.bus.jobs, ref.org, ref.id, self.worker_id, self.lease_s)

    async def handle(self, msg, stop: asyncio.Event) -> None:
        lease = self.lease(JobRef.decode(msg.data))
        claimed = await lease.claim()
        if claimed == "busy":
            await msg.nak(delay=self.lease_s)
            return
        if claimed is None:  # gone, finished or cancelled
            await msg.ack()
            return
        job: JobRecord = claimed
        stop_training = threading.Event()
        heartbeat = asyncio.create_task(lease.keep_alive(msg, self.settings.heartbeat_s))
        stopper = asyncio.create_task(self._stop_on(stop, stop_training))
        cancel_watch = asyncio.create_task(self._watch_cancel(job, stop_training))
        try:
            await self._train(job, lease, stop_training)
            await msg.ack()
        except JobCancelled:
            if stop.is_set():  # shutting down: hand the job back to the queue
                if await lease.release():
                    await self._event(job, "requeued", "Worker shutting down; job returned to the queue")
                await msg.nak()
            else:
                await msg.ack()
        except Exception as exc:  # noqa: BLE001 - any failure ends the job with its reason
            log.exception("job %s failed", job.id)
            error = JobError(code="training_failed", message=f"{type(exc).__name__}: {exc}")
            if await lease.fail(error):
                await self._event(job, "failed", error.message, level="error")
            await msg.ack()
        finally:
            for task in (heartbeat, stopper, cancel_watch):
                task.cancel()
            shutil.rmtree(self.work_dir / job.id, ignore_errors=True)

    async def _watch_cancel(self, job: JobRecord, stop_training: threading.Event) -> None:
        """A KV watch on the job record: a cancel stops training at the next step."""
        watcher = await self.bus.jobs.kv.watch(self.bus.jobs.key(job.org, job.id))
        try:
            async for entry in watcher:
                if (
                    entry is not None
                    and entry.value
                    and JobRecord.model_validate_json(entry.value).status == "cancelled"
                ):
                    stop_training.set()
                    return
        finally:
            await watcher.stop()

    async def _stop_on(self, stop: asyncio.Event, stop_training: threading.Event) -> None:
        await stop.wait()
        stop_training.set()

    async def _event(self, job: JobRecord, what: str, message: str, **kwargs) -> None:
        await self.bus.publish_event(make_event("job", job.id, job.org, what, message, **kwargs))

    async def _train(self, job: JobRecord, lease: Lease, stop_training: threading.Event) -> None:
        await self._event(job, "started", "Fine-tuning job started")
        loop = asyncio.get_running_loop()
        train_bytes = await self._file_bytes(job, job.training_file)
        valid_bytes = await self._file_bytes(job, job.validation_file) if job.validation_file else None
        model_dir = await asyncio.to_thread(ensure_base_model, job.model, self.model_cache)

        hp = Hyperparameters.model_validate(job.method["supervised"]["hyperparameters"])
        train_set, valid_set = await asyncio.to_thread(
            self._tokenize,
            model_dir,
            load_jsonl_examples(train_bytes),
            load_jsonl_examples(valid_bytes) if valid_bytes else [],
            hp.max_seq_len,
        )
        if not train_set:
            raise ValueError(
                "no training example has an assistant token left to train on; check the file's answers"
            )
        resolved = resolve(hp, len(train_set))
        await self._record_hyperparameters(job, resolved)

        def on_metrics(metrics: dict) -> None:
            future = asyncio.run_coroutine_threadsafe(self._on_metrics(job, metrics), loop)
            future.result(timeout=60)

        out_dir = self.work_dir / job.id / "adapter"
        result = await asyncio.to_thread(
            train_lora,
            model_dir,
            train_set,
            valid_set,
            resolved,
            job.seed,
            out_dir,
            on_metrics,
            stop_training.is_set,
        )
        if result.stopped:
            raise JobCancelled(job.id)
        model = await publish_adapter(self.bus, job, result.adapter_dir)

        final = await lease.finish(
            {"status": "succeeded", "fine_tuned_model": model.id, "trained_tokens": result.trained_tokens}
        )
        if final is not None:
            await self._event(job, "succeeded", f"The job has successfully completed: {model.id}")

    def _tokenize(self, model_dir: Path, train_rows: list[dict], valid_rows: list[dict], max_seq_len: int):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)

        def encode(rows):
            encoded = (tokenize_example(tokenizer, row["messages"], max_seq_len) for row in rows)
            return [ex for ex in encoded if ex is not None]

        return encode(train_rows), encode(valid_rows)

    async def _file_bytes(self, job: JobRecord, file_id: str) -> bytes:
        record = await self.bus.files.get(job.org, file_id)
        if record is None:
            raise FileNotFoundError(f"file {file_id} was deleted before training")
        return await self.bus.get_object(record.object_name)

    async def _record_hyperparameters(self, job: JobRecord, resolved) -> None:
        """The job shows the values "auto" resolved to, as OpenAI's does once training starts."""
        figures = {
            "n_epochs": resolved.n_epochs,
            "batch_size": resolved.batch_size,
            "learning_rate_multiplier": round(resolved.learning_rate / BASE_LEARNING_RATE, 6),
        }

        def apply(rec: JobRecord):
            method = dict(rec.method)
            hp = {**method["supervised"]["hyperparameters"], **figures}
            method["supervised"] = {**method["supervised"], "hyperparameters": hp}
            return rec.model_copy(update={"method": method})

        await self.bus.jobs.mutate(job.org, job.id, apply)

    async def _on_metrics(self, job: JobRecord, metrics: dict) -> None:
        parts = [
            f"Step {metrics['step']}/{metrics['total_steps']}: training loss={metrics['train_loss']:.4f}"
        ]
        if metrics.get("valid_loss") is not None:
            parts.append(f"validation loss={metrics['valid_loss']:.4f}")
        await self._event(job, "metrics", ", ".join(parts), data=metrics)
        eta = metrics.get("eta_s")
        if eta is not None:
            await self.bus.jobs.mutate(
                job.org,
                job.id,
                lambda rec: rec.model_copy(update={"estimated_finish": int(time.time() + eta)}),
            )
