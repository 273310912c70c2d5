"""An eval-run worker: pulls runs from their JetStream work queue (see queue_worker.py for the
lease and heartbeat machinery), samples and grades every item. A cancelled run stops at its next
item; a killed worker's run starts again from its first item elsewhere."""

import asyncio
import logging
import time

import grpc
from openai import AsyncOpenAI
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.bus import EVAL_RUN_STREAM, EVAL_RUN_SUBJECT, Bus, RecordStore
from tunery_common.leases import Lease
from tunery_common.records import EvalRunRecord, now

from tunery_evaljudge.eval_data import CompletionsConfig, RunItem, completions_config
from tunery_evaljudge.eval_results import grade_item, output_item, summarize
from tunery_evaljudge.eval_store import load_items, save_outputs
from tunery_evaljudge.graders.criteria import graders_from_testing_criteria
from tunery_evaljudge.graders.score_model import ScoreModelGrader
from tunery_evaljudge.judge import JudgeUnavailable, public_url
from tunery_evaljudge.queue_worker import Canceled, EvalFailed, Interrupted, QueueWorker
from tunery_evaljudge.settings import EvalJudgeSettings
from tunery_evaljudge.templates import Sample, TemplateError

log = logging.getLogger(__name__)

REPORTS_PER_EVAL = 20  # one progress event per 5% of the items


class EvalRunWorker(QueueWorker):
    stream = EVAL_RUN_STREAM
    subject = EVAL_RUN_SUBJECT
    durable = "evaljudge-run-workers"
    entity = "evalrun"
    label = "eval run"
    reset = {"n_done": 0}

    def __init__(
        self,
        bus: Bus,
        inference: inference_pb2_grpc.InferenceStub,
        settings: EvalJudgeSettings,
        judge: AsyncOpenAI | None = None,
    ):
        super().__init__(bus, inference, settings)
        self.judge = judge

    def records(self) -> RecordStore:
        return self.bus.eval_runs

    async def _run(self, run: EvalRunRecord, lease: Lease, stop: asyncio.Event) -> None:
        eval_record = await self.bus.eval_defs.get(run.org, run.eval_id)
        if eval_record is None:
            raise EvalFailed("eval_not_found", f"eval {run.eval_id} was deleted before the run ended")
        models = [run.model] if run.model else []
        graders = graders_from_testing_criteria(eval_record.testing_criteria, models)
        if any(isinstance(g, ScoreModelGrader) for g in graders) and self.judge is None:
            raise EvalFailed("judge_unavailable", "a score_model grader needs a judge endpoint")
        try:
            items = await load_items(self.bus, run)
        except FileNotFoundError:
            raise EvalFailed("items_missing", f"the items of {run.id} are missing") from None
        config = completions_config(run.data_source) if run.data_source.get("type") == "completions" else None
        await self._event(run, "started", f"Eval run started: {len(items)} items")
        outputs: list[dict | None] = [None] * len(items)
        pending = iter(items)
        report_every = max(1, len(items) // REPORTS_PER_EVAL)
        done = 0
        started = time.monotonic()

        async def lane() -> None:
            nonlocal done
            for run_item in pending:  # lanes share one iterator
                if stop.is_set():
                    raise Interrupted(run.id)
                current = await self.bus.eval_runs.get(run.org, run.id)
                if current is None or current.status == "canceled":
                    raise Canceled(run.id)
                outputs[run_item.index] = await self._item(run, run_item, config, graders)
                done += 1
                if done % report_every == 0 or done == len(items):
                    await self._progress(run, done, len(items), time.monotonic() - started)

        try:
            async with asyncio.TaskGroup() as lanes:
                for _ in range(min(self.settings.concurrency, len(items))):
                    lanes.create_task(lane())
        except ExceptionGroup as group:
            raise group.exceptions[0] from None
        finished = [o for o in outputs if o is not None]
        await save_outputs(self.bus, run, finished)
        judge = None
        if self.judge is not None:
            models = sorted({g.model for g in graders if isinstance(g, ScoreModelGrader)})
            judge = {"base_url": public_url(self.judge.base_url), "models": models}
        summary = summarize(graders, finished, judge)
        final = await lease.finish({"status": "completed", "n_done": len(finished), **summary})
        if final is None:  # cancelled at the last moment
            raise Canceled(run.id)
        counts = summary["result_counts"]
        await self._event(
            run,
            "completed",
            f"Eval run completed: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['errored']} errored of {counts['total']}",
            data=counts,
        )

    async def _item(
        self, run: EvalRunRecord, run_item: RunItem, config: CompletionsConfig | None, graders
    ) -> dict:
        prompt = None
        if config is None:
            sample = run_item.sample or Sample(output_text="", error="no sample")
        else:
            try:
                prompt = config.messages(run_item.item)
            except TemplateError as exc:
                raise EvalFailed("invalid_template", f"item {run_item.index}: {exc}") from None
            sample = await self._complete(run, config, prompt)
        try:
            grades = await grade_item(graders, run_item, sample, self.judge)
        except TemplateError as exc:  # a criterion refers to a field the item lacks
            raise EvalFailed("invalid_template", f"item {run_item.index}: {exc}") from None
        except JudgeUnavailable as exc:
            raise EvalFailed("judge_unavailable", str(exc)) from None
        ids = {"id": f"outputitem_{run.id}_{run_item.index}", "eval_id": run.eval_id, "run_id": run.id}
        return output_item(ids, run_item, sample, grades, prompt, run.model, now())

    async def _complete(self, run: EvalRunRecord, config: CompletionsConfig, prompt: list[dict]) -> Sample:
        request = inference_pb2.ChatCompletionRequest(
            org=run.org,
            model=config.model,
            messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in prompt],
            temperature=config.temperature,
            seed=config.seed,
        )
        if config.max_tokens is not None:
            request.max_tokens = config.max_tokens
        if config.top_p is not None:
            request.top_p = config.top_p
        started = time.monotonic()
        try:
            reply = await self.inference.ChatCompletion(
                request, timeout=self.settings.request_timeout_s, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise EvalFailed("model_not_found", exc.details()) from None
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise EvalFailed(
                    "inference_failed", f"inference: {exc.code().name}: {exc.details()}"
                ) from None
            return Sample(output_text="", error=exc.details())  # this item only
        return Sample(
            output_text=reply.content,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
        )

    async def _progress(self, run: EvalRunRecord, done: int, total: int, elapsed: float) -> None:
        def apply(rec: EvalRunRecord):
            return None if rec.is_final or rec.n_done >= done else rec.model_copy(update={"n_done": done})

        await self.bus.eval_runs.mutate(run.org, run.id, apply)
        eta = elapsed / done * (total - done)
        await self._event(
            run,
            "progress",
            f"{done}/{total} items",
            data={"n_done": done, "n_items": total, "elapsed_s": round(elapsed, 3), "eta_s": round(eta, 3)},
        )
