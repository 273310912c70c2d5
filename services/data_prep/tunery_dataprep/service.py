"""gRPC DataPrep service: reports on files of the object store, with the library `tunery data` uses.

A file is spooled from the object store to a temporary file and streamed from there, so memory
stays with the per-example sketches, whatever the file's size. The CPU work runs in a thread.
"""

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import IO

import grpc
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery_common.basemodels import UnknownModelError, spec_of
from tunery_common.bus import Bus
from tunery_common.grpc_errors import ServiceError, answer_or_abort, invalid, not_found

from tunery_dataprep.cost import estimate_cost, load_prices
from tunery_dataprep.quality import TASKS
from tunery_dataprep.report import billing_tokens, build_report, scan
from tunery_dataprep.settings import DataPrepSettings

log = logging.getLogger(__name__)

MAX_EPOCHS = 50  # as the trainer accepts


class DataPrepService(dataprep_pb2_grpc.DataPrepServicer):
    def __init__(self, bus: Bus, model_cache: Path, settings: DataPrepSettings | None = None):
        self.bus = bus
        settings = settings or DataPrepSettings(model_cache=model_cache)
        # Forking a process that runs gRPC threads is unsafe: workers, when configured, come from a
        # fork server, whose start costs seconds per report; by default a report runs in one thread.
        self.settings = settings.model_copy(
            update={"start_method": "forkserver", "workers": settings.workers or 1}
        )
        self.prices = load_prices(self.settings.prices_file)  # a bad table fails at start-up

    async def ValidateFile(self, request, context):
        return await answer_or_abort(context, self._validate_file, request)

    async def ValidateDataset(self, request, context):
        return await answer_or_abort(context, self._validate_dataset, request)

    async def EstimateCost(self, request, context):
        return await answer_or_abort(context, self._estimate_cost, request)

    @asynccontextmanager
    async def _spooled(self, org: str, file_id: str, param: str) -> AsyncIterator[IO[bytes]]:
        """The file's content in a temporary file (read from its start)."""
        record = await self.bus.files.get(org, file_id) if file_id else None
        if record is None:
            raise not_found(f"no file {file_id!r}", param)
        with tempfile.TemporaryFile() as spool:
            try:
                await self.bus.get_object(record.object_name, writeinto=spool)
            except FileNotFoundError:
                raise ServiceError(
                    grpc.StatusCode.DATA_LOSS, f"the content of {file_id} is missing"
                ) from None
            spool.seek(0)
            yield spool

    async def _validate_file(self, request) -> dataprep_pb2.ValidationReport:
        _check_model(request.model)
        async with self._spooled(request.org, request.file_id, "file_id") as spool:
            result = await asyncio.to_thread(
                scan,
                spool,
                model=request.model,
                settings=self.settings,
                training=request.training,
                sketch=False,
            )
        return dataprep_pb2.ValidationReport(
            n_examples=result.n_examples,
            n_errors=result.n_errors,
            errors=[
                dataprep_pb2.ValidationError(line=e.line, code=e.code, message=str(e), path=e.path)
                for e in result.errors
            ],
            total_tokens=sum(result.totals),
            assistant_tokens=sum(result.trained),
            format=result.format,
        )

    async def _validate_dataset(self, request) -> dataprep_pb2.DatasetReport:
        _check_model(request.model)
        if request.task and request.task not in TASKS:
            raise invalid(f"unknown task {request.task!r}; one of {', '.join(TASKS)}", "task")
        async with AsyncExitStack() as stack:
            train = await stack.enter_async_context(self._spooled(request.org, request.file_id, "file_id"))
            valid = None
            if request.validation_file_id:
                valid = await stack.enter_async_context(
                    self._spooled(request.org, request.validation_file_id, "validation_file_id")
                )
            report = await asyncio.to_thread(
                build_report,
                train,
                valid,
                model=request.model,
                task=request.task or None,
                settings=self.settings,
            )
        return dataprep_pb2.DatasetReport(
            json=report.model_dump_json(),
            n_examples=report.n_examples,
            n_errors=report.n_errors,
            total_tokens=report.tokens.total,
            billing_tokens=report.tokens.billing,
            n_epochs=report.n_epochs,
            estimated_trained_tokens=report.estimated_trained_tokens,
            n_warnings=len(report.warnings),
        )

    async def _estimate_cost(self, request) -> dataprep_pb2.CostEstimate:
        _check_model(request.model)
        n_epochs = request.n_epochs if request.HasField("n_epochs") else None
        if n_epochs is not None and not 1 <= n_epochs <= MAX_EPOCHS:
            raise invalid(f"n_epochs must lie in 1..{MAX_EPOCHS}", "n_epochs")
        cap = self.settings.billing_token_cap
        if request.file_id:
            async with self._spooled(request.org, request.file_id, "file_id") as spool:
                result = await asyncio.to_thread(
                    scan, spool, model=request.model, settings=self.settings, training=True, sketch=False
                )
            n_examples, billing = result.n_valid, billing_tokens(result.totals, cap)
        elif request.n_examples > 0 and request.tokens_per_example > 0:
            n_examples = request.n_examples
            billing = n_examples * min(request.tokens_per_example, cap)
        else:
            raise invalid("give a file_id, or n_examples and tokens_per_example (both > 0)", "file_id")
        estimate = estimate_cost(
            model=request.model,
            n_examples=n_examples,
            billing_tokens=billing,
            n_epochs=n_epochs,
            prices=self.prices,
            gpu=self.settings.gpu,
            gpu_usd_per_hour=self.settings.gpu_usd_per_hour,
            requests_per_day=request.requests_per_day,
            input_tokens_per_request=request.input_tokens_per_request,
            output_tokens_per_request=request.output_tokens_per_request,
        )
        return dataprep_pb2.CostEstimate(
            json=estimate.model_dump_json(),
            trained_tokens=estimate.trained_tokens,
            n_epochs=estimate.n_epochs,
        )


def _check_model(model: str) -> None:
    try:
        spec_of(model)
    except UnknownModelError as exc:
        raise invalid(str(exc.args[0]), "model", "model_not_found") from None
