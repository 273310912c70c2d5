from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidateFileRequest(_message.Message):
    __slots__ = ("org", "file_id", "model", "training")
    ORG_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    org: str
    file_id: str
    model: str
    training: bool
    def __init__(self, org: _Optional[str] = ..., file_id: _Optional[str] = ..., model: _Optional[str] = ..., training: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("n_examples", "n_errors", "errors", "total_tokens", "assistant_tokens", "format")
    N_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    n_examples: int
    n_errors: int
    errors: _containers.RepeatedCompositeFieldContainer[ValidationError]
    total_tokens: int
    assistant_tokens: int
    format: str
    def __init__(self, n_examples: _Optional[int] = ..., n_errors: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ValidationError, _Mapping]]] = ..., total_tokens: _Optional[int] = ..., assistant_tokens: _Optional[int] = ..., format: _Optional[str] = ...) -> None: ...

class ValidateDatasetRequest(_message.Message):
    __slots__ = ("org", "file_id", "validation_file_id", "model", "task")
    ORG_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    org: str
    file_id: str
    validation_file_id: str
    model: str
    task: str
    def __init__(self, org: _Optional[str] = ..., file_id: _Optional[str] = ..., validation_file_id: _Optional[str] = ..., model: _Optional[str] = ..., task: _Optional[str] = ...) -> None: ...

class DatasetReport(_message.Message):
    __slots__ = ("json", "n_examples", "n_errors", "total_tokens", "billing_tokens", "n_epochs", "estimated_trained_tokens", "n_warnings")
    JSON_FIELD_NUMBER: _ClassVar[int]
    N_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BILLING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    N_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TRAINED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    N_WARNINGS_FIELD_NUMBER: _ClassVar[int]
    json: str
    n_examples: int
    n_errors: int
    total_tokens: int
    billing_tokens: int
    n_epochs: int
    estimated_trained_tokens: int
    n_warnings: int
    def __init__(self, json: _Optional[str] = ..., n_examples: _Optional[int] = ..., n_errors: _Optional[int] = ..., total_tokens: _Optional[int] = ..., billing_tokens: _Optional[int] = ..., n_epochs: _Optional[int] = ..., estimated_trained_tokens: _Optional[int] = ..., n_warnings: _Optional[int] = ...) -> None: ...

class EstimateCostRequest(_message.Message):
    __slots__ = ("org", "file_id", "n_examples", "tokens_per_example", "model", "n_epochs", "requests_per_day", "input_tokens_per_request", "output_tokens_per_request")
    ORG_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    N_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    org: str
    file_id: str
    n_examples: int
    tokens_per_example: int
    model: str
    n_epochs: int
    requests_per_day: int
    input_tokens_per_request: int
    output_tokens_per_request: int
    def __init__(self, org: _Optional[str] = ..., file_id: _Optional[str] = ..., n_examples: _Optional[int] = ..., tokens_per_example: _Optional[int] = ..., model: _Optional[str] = ..., n_epochs: _Optional[int] = ..., requests_per_day: _Optional[int] = ..., input_tokens_per_request: _Optional[int] = ..., output_tokens_per_request: _Optional[int] = ...) -> None: ...

class CostEstimate(_message.Message):
    __slots__ = ("json", "trained_tokens", "n_epochs")
    JSON_FIELD_NUMBER: _ClassVar[int]
    TRAINED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    N_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    json: str
    trained_tokens: int
    n_epochs: int
    def __init__(self, json: _Optional[str] = ..., trained_tokens: _Optional[int] = ..., n_epochs: _Optional[int] = ...) -> None: ...
