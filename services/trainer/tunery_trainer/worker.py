"""A training worker: pulls jobs from the JetStream work queue and trains them, one at a time, on its
device.

The job message stays un-acked while training; `in_progress()` heartbeats keep JetStream from
redelivering it, and a lease in the job record (compare-and-set) makes sure a redelivered message
never starts a second run while the first one's lease is alive. A killed worker stops
heartbeating: its job is redelivered after `ack_wait` and its lease has expired by then; the next
worker resumes from the job's latest checkpoint.

A pause (seen through a watch on the job record) or a shutdown stops the loop at its next step
with a checkpoint; the worker then lets the job go: acked when paused (resuming enqueues it
again), handed back to the queue when shutting down.
"""

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nats.aio.msg import Msg
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import TRAIN_STREAM, TRAIN_SUBJECT, Bus, make_event
from tunery_common.ids import new_id
from tunery_common.leases import NO_LEASE, Lease
from tunery_common.records import JobRecord
from tunery_common.workqueue import pull_work

from tunery_trainer.checkpoints import download_state, resume_point, save_checkpoint
from tunery_trainer.data import prepare_training_data
from tunery_trainer.failures import free_accelerator_memory, job_error
from tunery_trainer.hyperparams import BASE_LEARNING_RATE, ResolvedHyperparameters, resolve
from tunery_trainer.jobref import JobRef
from tunery_trainer.loop import Checkpoint, StopRequest, TrainHooks, TrainResult, train
from tunery_trainer.managed import run_managed_job
from tunery_trainer.method import hyperparameters_of, method_type
from tunery_trainer.model_setup import check_adapter_config
from tunery_trainer.providers import ProviderCatalog
from tunery_trainer.publish import publish_adapter
from tunery_trainer.results import store_results
from tunery_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

DURABLE = "trainer-workers"
HOOK_TIMEOUT_S = 600  # a hook waits this long for the bus before the run fails
EVENT_LEVELS = {"warning": "warn"}  # OpenAI's event levels: info, warn, error

TrainFn = Callable[..., TrainResult]


class StopSignal:
    """What the training thread polls before every step: the first stop asked for; a cancel
    overrides a pause or a shutdown (nothing is saved for a cancelled job)."""

    def __init__(self) -> None:
        self._request: StopRequest | None = None
        self._asked = threading.Event()
        self._lock = threading.Lock()

    def request(self, kind: StopRequest) -> None:
        with self._lock:
            if self._request is None or kind == "cancel":
                self._request = kind
        self._asked.set()

    def __call__(self) -> StopRequest | None:
        return self._request

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until a stop is asked for (True) or the timeout passes (False)."""
        return self._asked.wait(timeout)


class TrainWorker:
    def __init__(
        self,
        bus: Bus,
        settings: TrainerSettings,
        work_dir: Path,
        model_cache: Path,
        device: str | None = None,
        train_fn: TrainFn = train,
        providers: ProviderCatalog | None = None,
    ):
        self.bus = bus
        self.settings = settings
        self.work_dir = work_dir
        self.model_cache = model_cache
        self.device = device  # None: the default one (the first GPU, else the CPU)
        self.train_fn = train_fn
        self.providers = providers or ProviderCatalog([])
        self.worker_id = new_id("worker")
        self.lease_s = settings.ack_wait_s

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s waiting for jobs (device %s)", self.worker_id, self.device or "default")
        queue = pull_work(self.bus.js, TRAIN_STREAM, TRAIN_SUBJECT, DURABLE, self.settings.ack_wait_s, stop)
        async for msg in queue:
            await self.handle(msg, stop)

    def lease(self, ref: JobRef) -> Lease:
        return Lease(self.bus.jobs, ref.org, ref.id, self.worker_id, self.lease_s)

    async def handle(self, msg: Msg, stop: asyncio.Event) -> None:
        lease = self.lease(JobRef.decode(msg.data))
        claimed = await lease.claim()
        if claimed == "busy":
            await msg.nak(delay=self.lease_s)
            return
        if claimed is None:  # gone, finished, cancelled or paused
            await msg.ack()
            return
        job: JobRecord = claimed
        signal = StopSignal()
        tasks = [
            asyncio.create_task(lease.keep_alive(msg, self.settings.heartbeat_s)),
            asyncio.create_task(self._stop_on(stop, signal)),
            asyncio.create_task(self._watch_status(job, signal)),
        ]
        failed = False
        try:
            provider = self.providers.provider_for(job.model)
            if provider is not None:  # trained at the provider; this worker mirrors it
                stopped = (await run_managed_job(self.bus, job, provider, lease, signal)).stopped
            else:
                stopped = await self._run(job, signal)
            if stopped in ("pause", "shutdown"):
                await self._let_go(job, msg, stopped)
            else:
                await msg.ack()
        except Exception as exc:  # noqa: BLE001 - any failure ends the job with its reason
            log.exception("job %s failed", job.id)
            failed = True
            error = job_error(exc, job.method)
            if await lease.fail(error):
                await self._event(job, "failed", error.message, level="error")
            await msg.ack()
        finally:
            for task in tasks:
                task.cancel()
            shutil.rmtree(self.work_dir / job.id, ignore_errors=True)
            if failed:
                free_accelerator_memory()

    async def _let_go(self, job: JobRecord, msg: Msg, stopped: StopRequest) -> None:
        """Drops the lease of a job stopped with a checkpoint: a paused job leaves the queue, one
        stopped by a shutdown goes back to it for another worker."""

        def release(rec: JobRecord):
            if rec.is_final or rec.lease_owner != self.worker_id:
                return None
            status = "paused" if rec.status == "paused" else "queued"
            return rec.model_copy(update={"status": status, **NO_LEASE})

        record = await self.bus.jobs.mutate(job.org, job.id, release)
        if stopped == "shutdown" and record is not None and record.status == "queued":
            checkpoint = resume_point(record)
            where = f"step {checkpoint.step_number}" if checkpoint else "its start"
            await self._event(job, "requeued", f"Worker shutting down; job returned to the queue at {where}")
            await msg.nak()
        else:  # paused (a resume enqueues the job again), or ended meanwhile
            await msg.ack()

    async def _watch_status(self, job: JobRecord, signal: StopSignal) -> None:
        """A KV watch on the job record: a cancel or a pause stops training at the next step."""
        watcher = await self.bus.jobs.kv.watch(self.bus.jobs.key(job.org, job.id))
        try:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                status = JobRecord.model_validate_json(entry.value).status
                if status == "cancelled":
                    signal.request("cancel")
                    return
                if status == "paused":
                    signal.request("pause")
        finally:
            await watcher.stop()

    async def _stop_on(self, stop: asyncio.Event, signal: StopSignal) -> None:
        await stop.wait()
        signal.request("shutdown")

    async def _event(self, job: JobRecord, what: str, message: str, **kwargs) -> None:
        await self.bus.publish_event(make_event("job", job.id, job.org, what, message, **kwargs))

    async def _run(self, job: JobRecord, signal: StopSignal) -> StopRequest | None:
        """Trains the job to its end (None) or until a stop; returns the stop."""
        checkpoint = resume_point(job)
        train_bytes = await self._file_bytes(job, job.training_file)
        valid_bytes = await self._file_bytes(job, job.validation_file) if job.validation_file else None
        model_dir = await asyncio.to_thread(ensure_base_model, job.model, self.model_cache)
        hp = hyperparameters_of(job.method)
        await asyncio.to_thread(check_adapter_config, model_dir, hp, self.settings.max_lora_rank)
        data = await asyncio.to_thread(prepare_training_data, model_dir, train_bytes, valid_bytes, hp)
        if data.n_truncated:
            await self._event(
                job,
                "examples_truncated",
                f"{data.n_truncated} examples are longer than max_seq_len={hp.max_seq_len} tokens and were "
                "cut to fit (their oldest tokens dropped); raise max_seq_len or shorten them",
                level="warn",
                data={"n_truncated": data.n_truncated, "max_seq_len": hp.max_seq_len},
                type="message",
            )
        resolved = resolve(hp, len(data.train))
        await self._record_hyperparameters(job, resolved)

        job_dir = self.work_dir / job.id
        resume_from = None
        if checkpoint is not None:
            resume_from = await download_state(self.bus, checkpoint, job_dir / "resume")
            await self._event(
                job,
                "resumed",
                f"Resuming from the checkpoint at step {checkpoint.step_number}",
                data={"step": checkpoint.step_number},
                type="message",
            )
        else:
            await self._event(job, "started", "Fine-tuning job started")
        if signal() is not None:  # stopped while preparing: nothing new to save
            return signal()

        loop = asyncio.get_running_loop()

        def call(coro) -> None:  # from the training thread: wait until the bus has it
            asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=HOOK_TIMEOUT_S)

        hooks = TrainHooks(
            on_metrics=lambda metrics: call(self._on_metrics(job, metrics)),
            on_event=lambda what, level, message, data: call(
                self._event(
                    job, what, message, level=EVENT_LEVELS.get(level, level), data=data, type="message"
                )
            ),
            on_checkpoint=lambda ckpt: call(self._on_checkpoint(job, ckpt, signal)),
            stop_requested=signal,
        )
        result = await asyncio.to_thread(
            self.train_fn,
            model_dir,
            data,
            resolved,
            job.seed,
            job_dir / "run",
            hooks,
            resume_from,
            device=self.device,
        )
        if result.stopped:
            return result.stopped
        await self._succeed(job, result)
        return None

    async def _succeed(self, job: JobRecord, result: TrainResult) -> None:
        model = await publish_adapter(self.bus, job, result.adapter_dir)
        results = await store_results(self.bus, job, result.history)
        lease = self.lease(JobRef(job.org, job.id))
        final = await lease.finish(
            {
                "status": "succeeded",
                "fine_tuned_model": model.id,
                "trained_tokens": result.trained_tokens,
                "result_files": [results.id],
            }
        )
        if final is None:  # cancelled at the very end: its result file goes with it
            await self.bus.files.delete(job.org, results.id)
            await self.bus.delete_object(results.object_name)
            return
        step, why = _published_step(result)
        await self._event(
            job,
            "succeeded",
            f"The job has successfully completed: {model.id}. {why}",
            data={"step": step, "early_stopped": result.early_stopped},
            type="message",
        )

    async def _on_checkpoint(self, job: JobRecord, checkpoint: Checkpoint, signal: StopSignal) -> None:
        saved = await save_checkpoint(
            self.bus,
            job,
            self.worker_id,
            checkpoint.step,
            checkpoint.epoch,
            checkpoint.path,
            checkpoint.metrics,
        )
        if saved is None:
            return
        why = {
            "epoch": f"end of epoch {checkpoint.epoch}",
            "interval": "periodic",
            "stop": "job paused" if signal() == "pause" else "worker shutting down",
        }.get(checkpoint.reason, checkpoint.reason)
        await self._event(
            job,
            "checkpoint",
            f"Checkpoint at step {checkpoint.step} ({why}): {saved.fine_tuned_model_checkpoint}",
            data={
                "step": checkpoint.step,
                "epoch": checkpoint.epoch,
                "reason": checkpoint.reason,
                "fine_tuned_model_checkpoint": saved.fine_tuned_model_checkpoint,
            },
            type="message",
        )

    async def _file_bytes(self, job: JobRecord, file_id: str) -> bytes:
        record = await self.bus.files.get(job.org, file_id)
        if record is None:
            raise FileNotFoundError(f"file {file_id} was deleted before training")
        return await self.bus.get_object(record.object_name)

    async def _record_hyperparameters(self, job: JobRecord, resolved: ResolvedHyperparameters) -> None:
        """The job shows the values "auto" resolved to, as OpenAI's does once training starts."""
        kind = method_type(job.method)
        figures = {
            "n_epochs": resolved.n_epochs,
            "batch_size": resolved.batch_size,
            "learning_rate_multiplier": round(resolved.learning_rate / BASE_LEARNING_RATE, 6),
        }
        if kind == "dpo":
            figures["beta"] = resolved.beta

        def apply(rec: JobRecord):
            method = dict(rec.method)
            section = method.get(kind) or {}
            hp = {**(section.get("hyperparameters") or {}), **figures}
            method[kind] = {**section, "hyperparameters": hp}
            return rec.model_copy(update={"method": method})

        await self.bus.jobs.mutate(job.org, job.id, apply)

    async def _on_metrics(self, job: JobRecord, metrics: dict) -> None:
        parts = [
            f"Step {metrics['step']}/{metrics['total_steps']}: training loss={metrics['train_loss']:.4f}"
        ]
        if metrics.get("valid_loss") is not None:
            parts.append(f"validation loss={metrics['valid_loss']:.4f}")
        await self._event(job, "metrics", ", ".join(parts), data=metrics)
        update = {"trained_tokens": metrics.get("trained_tokens")}
        if metrics.get("eta_s") is not None:
            update["estimated_finish"] = int(time.time() + metrics["eta_s"])

        def progress(rec: JobRecord):
            if rec.is_final or rec.lease_owner != self.worker_id:
                return None
            return rec.model_copy(update={k: v for k, v in update.items() if v is not None})

        await self.bus.jobs.mutate(job.org, job.id, progress)


def _published_step(result: TrainResult) -> tuple[int, str]:
    """The step whose adapter was published, and why that one."""
    stopped_early = (
        "Training stopped early: the validation loss stopped improving. " if result.early_stopped else ""
    )
    if result.best_step is None:
        return result.steps, f"{stopped_early}Published the adapter of the last step ({result.steps}); " + (
            "without a validation file there is no loss to choose by."
        )
    report = next((r for r in reversed(result.history) if r.get("step") == result.best_step), {})
    loss = report.get("full_valid_loss")
    loss = report.get("valid_loss") if loss is None else loss
    measured = f" ({loss:.4f})" if loss is not None else ""
    return result.best_step, (
        f"{stopped_early}Published the adapter of step {result.best_step}, "
        f"the one with the lowest validation loss{measured}."
    )
