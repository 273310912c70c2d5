from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidateFileRequest(_message.Message):
    __slots__ = ("org", "file_id", "model")
    ORG_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    org: str
    file_id: str
    model: str
    def __init__(self, org: _Optional[str] = ..., file_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ValidationError(_message.Message):
    __slots__ = ("line", "code", "message", "path")
    LINE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    line: int
    code: str
    message: str
    path: str
    def __init__(self, line: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ValidationReport(_message.Message):
    __slots__ = ("n_examples", "n_errors", "errors", "total_tokens", "assistant_tokens")
    N_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    n_examples: int
    n_errors: int
    errors: _containers.RepeatedCompositeFieldContainer[ValidationError]
    total_tokens: int
    assistant_tokens: int
    def __init__(self, n_examples: _Optional[int] = ..., n_errors: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ValidationError, _Mapping]]] = ..., total_tokens: _Optional[int] = ..., assistant_tokens: _Optional[int] = ...) -> None: ...
