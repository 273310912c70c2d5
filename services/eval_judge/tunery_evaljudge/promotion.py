"""The promotion gate: a fine-tuned model published "pending" is evaluated, then promoted or rejected.

Two KV watches drive it, so that nothing is missed across restarts: each first replays every
current record (the scan of pending models and finished runs), then follows changes from there,
with no gap between the two. A pending model gets its eval run (and one of `compare_to`, when the
gate names it) through the eval-run work queue, and a finished run of a pending model decides.
Run ids are derived from the model, so a replayed or concurrent start finds the runs already
there; the decision is a compare-and-set from "pending", so only one replica announces it. A
record whose handling fails for a passing reason (NATS or a service briefly away) is retried, as
no later change may come to bring it back.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from tunery.evaljudge.v1 import evaljudge_pb2
from tunery_common.bus import ConflictError, make_event
from tunery_common.grpc_errors import ServiceError
from tunery_common.promotion import PromotionGate, failed_thresholds, parse_gate
from tunery_common.records import EvalRunRecord, ModelRecord

from tunery_evaljudge.eval_compare import compare_runs
from tunery_evaljudge.evals_control import EvalsControl
from tunery_evaljudge.graders.criteria import graders_from_testing_criteria

log = logging.getLogger(__name__)

METADATA_KEY = "promotion_model"  # in the metadata of a gate's runs: the models-bucket id
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


def candidate_run_id(model: ModelRecord) -> str:
    return f"evalrun_gate_{model.key_id}"


def baseline_run_id(model: ModelRecord) -> str:
    return f"evalrun_gate_{model.key_id}_baseline"


class Promoter:
    def __init__(self, control: EvalsControl):
        self.control = control
        self.bus = control.bus
        self.replayed = asyncio.Event()  # set once every record present at start has been handled
        self._replaying = 0

    async def run(self, stop: asyncio.Event) -> None:
        watchers: list[KeyValue.KeyWatcher] = []
        follows: list[asyncio.Task] = []
        self._replaying = 2
        try:
            for kv, record_type, handle in (
                (self.bus.models.kv, ModelRecord, self.on_model),
                (self.bus.eval_runs.kv, EvalRunRecord, self.on_run),
            ):
                watchers.append(watcher := await kv.watchall())
                follows.append(asyncio.create_task(self._follow(watcher, record_type, handle, stop)))
            await stop.wait()
        finally:
            # Stopping a watcher ends its loop after the record in hand, so no handler is cut
            # half-way (a model decided but not announced). A cancel is only the fallback: it can
            # be lost inside a NATS request on Python 3.11, leaving the loop running.
            for watcher, follow in zip(watchers, follows, strict=False):
                try:
                    await watcher.stop()
                except nats.errors.Error:  # the connection is gone: nothing more will arrive
                    follow.cancel()
            await asyncio.gather(*follows, return_exceptions=True)

    async def _follow(
        self,
        watcher: KeyValue.KeyWatcher,
        record_type: type,
        handle: Callable[[Any], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        replaying = True
        async for entry in watcher:
            if entry is None and replaying:  # the watch has replayed the current records
                replaying = False
                self._replaying -= 1
                if not self._replaying:
                    self.replayed.set()
            if entry is None or entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                continue
            delay = RETRY_FIRST_S
            while True:
                try:
                    await handle(record_type.model_validate_json(entry.value))
                    break
                except Exception as exc:  # noqa: BLE001 - one bad record must not stop the gate
                    if not _is_transient(exc):
                        log.exception("promotion gate: %s failed", entry.key)
                        break
                    if stop.is_set():
                        break  # the next start replays the record
                    log.warning("promotion gate: %s failed (%s), retrying in %.1fs", entry.key, exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
                delay = min(delay * 2, RETRY_MAX_S)

    async def _gate(self, model: ModelRecord) -> PromotionGate | None:
        job = await self.bus.jobs.get(model.org, model.job_id)
        return parse_gate(job.eval) if job is not None and job.eval else None

    async def on_model(self, model: ModelRecord) -> None:
        if model.promotion != "pending" or model.checkpoint_step is not None or model.status != "ready":
            return
        job = await self.bus.jobs.get(model.org, model.job_id)
        if job is None or not job.eval:
            await self._decide_as(model, "rejected", "its job or the job's eval is gone", {})
            return
        gate = parse_gate(job.eval)
        file_id = gate.file_id or job.validation_file
        runs = {candidate_run_id(model): model.id}
        if gate.compare_to:
            runs[baseline_run_id(model)] = model.parent if gate.compare_to == "base" else gate.compare_to
        for run_id, model_under_test in runs.items():
            try:
                await self._start_run(model, gate, file_id, run_id, model_under_test)
            except ServiceError as exc:  # e.g. the file or the eval was deleted since the job began
                if _is_transient(exc):
                    raise  # retried: a service briefly away is no verdict on the model
                reason = f"the eval run of {model_under_test} could not start: {exc.message}"
                await self._decide_as(model, "rejected", reason, {})
                return

        def note_runs(record: ModelRecord) -> ModelRecord | None:
            if record.promotion != "pending" or record.eval_run_id:
                return None
            return record.model_copy(
                update={
                    "eval_id": gate.eval_id,
                    "eval_run_id": candidate_run_id(record),
                    "baseline_run_id": baseline_run_id(record) if gate.compare_to else None,
                }
            )

        await self.bus.models.mutate(model.org, model.key_id, note_runs)
        await self._decide(model.org, model.key_id)  # the runs may have ended before a restart

    async def _start_run(
        self, model: ModelRecord, gate: PromotionGate, file_id: str, run_id: str, model_under_test: str
    ) -> None:
        if await self.bus.eval_runs.get(model.org, run_id) is not None:
            return
        request = evaljudge_pb2.CreateEvalRunRequest(
            org=model.org,
            eval_id=gate.eval_id,
            name=f"promotion gate of {model.id}" + ("" if model_under_test == model.id else " (baseline)"),
            data_source_json=json.dumps(gate.data_source(model_under_test, file_id)),
            metadata_json=json.dumps({METADATA_KEY: model.key_id}),
        )
        try:
            await self.control._create_run(request, run_id=run_id)
        except ConflictError:
            pass  # another replica created it meanwhile

    async def on_run(self, run: EvalRunRecord) -> None:
        key_id = (run.metadata or {}).get(METADATA_KEY)
        if run.is_final and key_id:
            await self._decide(run.org, key_id)

    async def _decide(self, org: str, key_id: str) -> None:
        model = await self.bus.models.get(org, key_id)
        if model is None or model.promotion != "pending" or model.checkpoint_step is not None:
            return
        gate = await self._gate(model)
        if gate is None:
            return
        candidate = await self.bus.eval_runs.get(org, candidate_run_id(model))
        baseline = await self.bus.eval_runs.get(org, baseline_run_id(model)) if gate.compare_to else None
        unfinished = [r for r in (candidate, baseline) if r is None or not r.is_final]
        if candidate is None or not candidate.is_final or (gate.compare_to and unfinished):
            return  # a run has yet to finish; its end calls again
        for run in (candidate, baseline):
            if run is not None and run.status != "completed":
                why = f": {run.error.message}" if run.error else ""
                await self._decide_as(model, "rejected", f"eval run {run.id} {run.status}{why}", {})
                return
        figures: dict[str, Any] = {
            "eval_run_id": candidate.id,
            "result_counts": candidate.result_counts,
            "failed_thresholds": failed_thresholds(gate, candidate),
        }
        reasons = [
            f"{f['threshold']} {f['value']} < {f['minimum']}"
            if f["value"] is not None
            else f"no figure for {f['threshold']}"
            for f in figures["failed_thresholds"]
        ]
        if baseline is not None:
            worse = await self._worse_than_baseline(candidate, baseline)
            figures |= {"baseline_run_id": baseline.id, "compare_to": baseline.model, "worse_criteria": worse}
            reasons += [f"{name} significantly worse than {baseline.model}" for name in worse]
        if reasons:
            await self._decide_as(model, "rejected", "; ".join(reasons), figures)
        else:
            await self._decide_as(model, "promoted", "every threshold met", figures)

    async def _worse_than_baseline(self, candidate: EvalRunRecord, baseline: EvalRunRecord) -> list[str]:
        eval_record = await self.control._eval(candidate.org, candidate.eval_id)
        graders = graders_from_testing_criteria(eval_record.testing_criteria, allow_self_judging=True)
        comparison = await compare_runs(
            graders,
            (baseline, await self.control._completed_outputs(baseline)),
            (candidate, await self.control._completed_outputs(candidate)),
        )
        return [
            c["testing_criteria"]
            for c in comparison["testing_criteria"]
            if c["pass_fail"]["verdict"] == "worse" or (c.get("scores") or {}).get("verdict") == "worse"
        ]

    async def _decide_as(
        self, model: ModelRecord, decision: str, reason: str, figures: dict[str, Any]
    ) -> None:
        decided: list[ModelRecord] = []

        def apply(record: ModelRecord) -> ModelRecord | None:
            decided.clear()  # compare-and-set retries call this again
            if record.promotion != "pending":
                return None
            update: dict[str, Any] = {"promotion": decision, "promotion_reason": reason}
            if decision == "promoted":
                update["promoted_at"] = time.time()
            decided.append(record.model_copy(update=update))
            return decided[0]

        await self.bus.models.mutate(model.org, model.key_id, apply)
        if not decided:
            return  # decided before (a redelivery, or another replica)
        event = make_event(
            "model",
            model.key_id,
            model.org,
            decision,
            f"{model.id} {decision}: {reason}",
            level="info" if decision == "promoted" else "warning",
            data={"model": model.id, **figures},
        )
        event.id = f"ftevent-{model.key_id}-{decision}"  # de-duplicated by JetStream if sent twice
        await self.bus.publish_event(event)
        log.info("model %s %s: %s", model.id, decision, reason)


def _is_transient(exc: Exception) -> bool:
    """A failure that retrying the same record may get past."""
    if isinstance(exc, ServiceError):
        return exc.status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, nats.errors.Error | TimeoutError | ConnectionError)
