"""`/v1/files`: uploads kept in the JetStream object store, records in the files KV bucket.

The gateway owns this resource, so it talks to the bus directly rather than through a service.
"""

import re
import tempfile
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from tunery_common.bus import Bus
from tunery_common.ids import new_id
from tunery_common.records import FileRecord

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import BusDep, SettingsDep
from tunery_gateway.errors import OpenAIError, raise_openai_error
from tunery_gateway.limits import counting_receive, declared_too_large
from tunery_gateway.pagination import Page, page_query, paginate
from tunery_gateway.schemas.files import PURPOSES, FileDeleted, FileList, FileObject
from tunery_gateway.spool import stream_spooled

router = APIRouter(tags=["files"])

MB = 1 << 20
# Room for the multipart boundaries, part headers and the `purpose` field around the file.
MULTIPART_OVERHEAD = 64 << 10
# Ids become KV keys (`<org>.<id>`): anything else (dots, wildcards) cannot name a file.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


def _too_large(limit_mb: int) -> OpenAIError:
    return OpenAIError(
        413, f"File is larger than the {limit_mb} MB upload limit.", param="file", code="file_too_large"
    )


async def _read_form(request: Request, limit_mb: int) -> FormData:
    """The multipart form, refused (413) as soon as the body outgrows the limit.

    Starlette spools the file part to a temporary file beyond 1 MB, and closes it on failure.
    """
    max_body, error = limit_mb * MB + MULTIPART_OVERHEAD, _too_large(limit_mb)
    if declared_too_large(request.headers, max_body):
        raise error
    limited = Request(request.scope, counting_receive(request.receive, max_body, error))
    return await limited.form(max_files=1, max_fields=4)


def _form_upload(form: FormData) -> tuple[UploadFile, str]:
    upload, purpose = form.get("file"), form.get("purpose")
    if upload is None:
        raise_openai_error(400, "Missing required parameter: 'file'.", param="file")
    if not isinstance(upload, UploadFile):
        raise_openai_error(400, "'file' must be a file upload, not a text field.", param="file")
    if purpose is None:
        raise_openai_error(400, "Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        message = f"Invalid value for 'purpose': {str(purpose)[:64]!r}; expected one of {PURPOSES}."
        raise_openai_error(400, message, param="purpose")
    return upload, str(purpose)


@router.post("/files", openapi_extra=_UPLOAD_SCHEMA)
async def create_file(request: Request, org: Org, bus: BusDep, settings: SettingsDep) -> FileObject:
    form = await _read_form(request, settings.max_upload_mb)
    try:
        upload, purpose = _form_upload(form)
        size = upload.size or 0
        if size > settings.max_upload_mb * MB:
            raise _too_large(settings.max_upload_mb)
        if size == 0:
            raise_openai_error(400, "The uploaded file is empty.", param="file")
        record = FileRecord(
            id=new_id("file"),
            org=org,
            bytes=size,
            filename=PurePath(upload.filename or "upload").name,
            purpose=purpose,
        )
        await upload.seek(0)
        # Bytes first, record second: a visible record always has its content.
        await bus.put_object(record.object_name, upload.file)
        try:
            await bus.files.create(org, record.id, record)
        except BaseException:
            await bus.delete_object(record.object_name)
            raise
    finally:
        await form.close()
    return FileObject.from_record(record)


@router.get("/files")
async def list_files(
    org: Org,
    bus: BusDep,
    page: Annotated[Page, Depends(page_query(default=10000, maximum=10000))],
    purpose: Annotated[str | None, Query()] = None,
) -> FileList:
    records = [r for r in await bus.files.list(org) if purpose is None or r.purpose == purpose]
    items, has_more = paginate(records, page, lambda r: r.id)
    data = [FileObject.from_record(r) for r in items]
    return FileList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


async def _record(bus: Bus, org: str, file_id: str) -> FileRecord:
    # Another org's file answers exactly like an unknown one.
    record = await bus.files.get(org, file_id) if _ID.match(file_id) else None
    if record is None:
        raise_openai_error(404, f"No such File object: {file_id}", param="id", code="not_found")
    return record


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, org: Org, bus: BusDep) -> FileObject:
    return FileObject.from_record(await _record(bus, org, file_id))


@router.get("/files/{file_id}/content", response_class=StreamingResponse)
async def retrieve_file_content(file_id: str, org: Org, bus: BusDep) -> StreamingResponse:
    record = await _record(bus, org, file_id)
    # Spooled to disk rather than memory: uploads may be hundreds of MB.
    spool = tempfile.TemporaryFile()
    try:
        await bus.get_object(record.object_name, writeinto=spool)
    except FileNotFoundError:
        spool.close()
        raise_openai_error(404, f"The content of {file_id} is gone.", param="id", code="not_found")
    except BaseException:
        spool.close()
        raise
    return StreamingResponse(
        stream_spooled(spool),
        media_type="application/octet-stream",
        headers={"Content-Length": str(spool.tell())},
    )


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, org: Org, bus: BusDep) -> FileDeleted:
    record = await _record(bus, org, file_id)
    # Record first: a failure in between leaves unreachable bytes, never a record without content.
    await bus.files.delete(org, record.id)
    await bus.delete_object(record.object_name)
    return FileDeleted(id=record.id, deleted=True)
