"""gRPC DataPrep service: validates uploaded files from the object store."""

import asyncio
import logging
from pathlib import Path

import grpc
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery_common.basemodels import UnknownModelError, spec_of
from tunery_common.bus import Bus
from tunery_common.grpc_errors import ServiceError, abort_with, invalid, not_found

from tunery_dataprep.report import build_report

log = logging.getLogger(__name__)


class DataPrepService(dataprep_pb2_grpc.DataPrepServicer):
    def __init__(self, bus: Bus, model_cache: Path):
        self.bus = bus
        self.model_cache = model_cache

    async def ValidateFile(self, request, context):
        try:
            return await self._validate(request)
        except ServiceError as exc:
            await abort_with(context, exc)

    async def _validate(self, request) -> dataprep_pb2.ValidationReport:
        try:
            spec_of(request.model)
        except UnknownModelError as exc:
            raise invalid(str(exc.args[0]), "model") from None
        record = await self.bus.files.get(request.org, request.file_id)
        if record is None:
            raise not_found(f"no file {request.file_id!r}", "file_id")
        try:
            data = await self.bus.get_object(record.object_name)
        except FileNotFoundError:
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS, f"the content of {request.file_id} is missing"
            ) from None
        report = await asyncio.to_thread(build_report, data, request.model, self.model_cache)
        return dataprep_pb2.ValidationReport(
            n_examples=report.n_examples,
            n_errors=report.n_errors,
            errors=[
                dataprep_pb2.ValidationError(line=e.line, code=e.code, message=str(e), path=e.path)
                for e in report.errors
            ],
            total_tokens=report.total_tokens,
            assistant_tokens=report.assistant_tokens,
        )
