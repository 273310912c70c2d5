"""JSON objects in and out of `google.protobuf.Struct` (used for job methods and event data)."""

from typing import Any

from google.protobuf import json_format, struct_pb2


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A plain dict; Struct numbers are doubles, so whole ones become ints again (n_epochs: 3)."""
    return _restore_ints(json_format.MessageToDict(struct))


def _restore_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _restore_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore_ints(item) for item in value]
    return value
