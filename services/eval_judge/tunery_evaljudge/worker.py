"""A quick-eval worker: pulls evals from their JetStream work queue (see queue_worker.py for the
lease and heartbeat machinery) and runs each example of the file through the model."""

import asyncio
import logging
import time

import grpc
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2
from tunery_common.bus import EVAL_STREAM, EVAL_SUBJECT, RecordStore
from tunery_common.leases import Lease
from tunery_common.records import QuickEvalRecord, QuickEvalResult

from tunery_evaljudge.graders.basic import exact_match, json_valid
from tunery_evaljudge.items import EvalItem, default_max_tokens, load_items
from tunery_evaljudge.progress import Tally
from tunery_evaljudge.queue_worker import EvalFailed, Interrupted, QueueWorker
from tunery_evaljudge.results import save_results

log = logging.getLogger(__name__)


class QuickEvalWorker(QueueWorker):
    stream = EVAL_STREAM
    subject = EVAL_SUBJECT
    durable = "evaljudge-workers"
    entity = "eval"
    label = "quick eval"
    # A redelivered eval runs again from its start (greedy decoding gives the same answers).
    reset = {"n_done": 0, "exact_match_rate": None, "json_valid_rate": None}

    def records(self) -> RecordStore:
        return self.bus.evals

    async def _run(self, record: QuickEvalRecord, lease: Lease, stop: asyncio.Event) -> None:
        await self._event(record, "started", f"Quick eval started: {record.n_items} examples")
        items = load_items(await self._file_bytes(record), record.max_items).items
        if not items:
            raise EvalFailed("invalid_file", f"{record.file_id} holds no example ending with an answer")
        tally = Tally(len(items))
        results: list[QuickEvalResult | None] = [None] * len(items)
        pending = iter(items)

        async def lane() -> None:
            # Lanes share one iterator: each takes the next item until none is left.
            for item in pending:
                if stop.is_set():  # shutting down: the eval restarts on another worker
                    raise Interrupted(record.id)
                result = results[item.index] = await self._complete(record, item)
                if tally.add(result.exact_match, result.json_valid):
                    await self._progress(record, tally)

        try:
            # A TaskGroup: the first failure cancels the other lanes.
            async with asyncio.TaskGroup() as lanes:
                for _ in range(min(self.settings.concurrency, len(items))):
                    lanes.create_task(lane())
        except ExceptionGroup as group:
            raise group.exceptions[0] from None
        await self._finish_succeeded(record, lease, [r for r in results if r is not None], tally)

    async def _file_bytes(self, record: QuickEvalRecord) -> bytes:
        file = await self.bus.files.get(record.org, record.file_id)
        try:
            if file is None:
                raise FileNotFoundError(record.file_id)
            return await self.bus.get_object(file.object_name)
        except FileNotFoundError:
            message = f"file {record.file_id} was deleted before the eval ran"
            raise EvalFailed("file_not_found", message) from None

    async def _complete(self, record: QuickEvalRecord, item: EvalItem) -> QuickEvalResult:
        """The model's greedy answer to one item, graded against its reference."""
        request = inference_pb2.ChatCompletionRequest(
            org=record.org,
            model=record.model,
            messages=[common_pb2.ChatMessage(**m) for m in item.prompt],
            max_tokens=record.max_tokens or default_max_tokens(item.reference),
            temperature=0,
            seed=0,
        )
        started = time.monotonic()
        output, error = "", None
        try:
            # wait_for_ready: an inference replica restarting delays the eval instead of failing it.
            reply = await self.inference.ChatCompletion(
                request, timeout=self.settings.request_timeout_s, wait_for_ready=True
            )
            output = reply.content
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # e.g. the fine-tuned model was deleted
                raise EvalFailed("model_not_found", exc.details()) from None
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                message = f"inference: {exc.code().name}: {exc.details()}"
                raise EvalFailed("inference_failed", message) from None
            error = exc.details()  # this item only, e.g. a prompt longer than the model's context
        return QuickEvalResult(
            index=item.index,
            line=item.line,
            prompt=item.prompt_text,
            expected=item.reference,
            output=output,
            exact_match=error is None and exact_match(output, item.reference),
            json_valid=error is None and json_valid(output),
            latency_ms=round((time.monotonic() - started) * 1000),
            error=error,
        )

    async def _progress(self, record: QuickEvalRecord, tally: Tally) -> None:
        figures = tally.figures()
        update = {k: figures[k] for k in ("n_done", "exact_match_rate", "json_valid_rate")}

        def apply(rec: QuickEvalRecord):
            # Lanes finish out of order: never move the count backwards.
            return None if rec.is_final or rec.n_done >= update["n_done"] else rec.model_copy(update=update)

        await self.bus.evals.mutate(record.org, record.id, apply)
        await self._event(
            record,
            "progress",
            f"{tally.n_done}/{tally.n_items} examples: exact match {tally.exact_match_rate:.1%}, "
            f"JSON valid {tally.json_valid_rate:.1%}",
            data=figures,
        )

    async def _finish_succeeded(
        self, record: QuickEvalRecord, lease: Lease, results: list[QuickEvalResult], tally: Tally
    ) -> None:
        await save_results(self.bus, record, results)
        final = await lease.finish(
            {
                "status": "succeeded",
                "n_done": tally.n_done,
                "exact_match_rate": tally.exact_match_rate,
                "json_valid_rate": tally.json_valid_rate,
            }
        )
        if final is not None:
            await self._event(
                record,
                "succeeded",
                f"Quick eval finished: exact match {tally.exact_match_rate:.1%}, "
                f"JSON valid {tally.json_valid_rate:.1%} over {tally.n_done} examples",
            )
