"""Files: OpenAI's FileObject and its list / delete answers."""

from typing import Literal

from pydantic import BaseModel
from tunery_common.records import FileRecord

from tunery_gateway.schemas.base import ListObject

PURPOSES = ("fine-tune", "evals")


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str

    @classmethod
    def from_record(cls, record: FileRecord) -> "FileObject":
        return cls(
            id=record.id,
            bytes=record.bytes,
            created_at=record.created_at,
            filename=record.filename,
            purpose=record.purpose,
            status=record.status,
        )


class FileList(ListObject[FileObject]):
    first_id: str | None
    last_id: str | None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
