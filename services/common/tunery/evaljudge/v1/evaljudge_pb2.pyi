from tunery.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvalDocument(_message.Message):
    __slots__ = ("id", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    json: str
    def __init__(self, id: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class EvalDocumentList(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[EvalDocument]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[EvalDocument, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class CreateEvalRequest(_message.Message):
    __slots__ = ("org", "name", "data_source_config_json", "testing_criteria_json", "metadata_json")
    ORG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    TESTING_CRITERIA_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    org: str
    name: str
    data_source_config_json: str
    testing_criteria_json: str
    metadata_json: str
    def __init__(self, org: _Optional[str] = ..., name: _Optional[str] = ..., data_source_config_json: _Optional[str] = ..., testing_criteria_json: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class GetEvalRequest(_message.Message):
    __slots__ = ("org", "eval_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ...) -> None: ...

class ListEvalsRequest(_message.Message):
    __slots__ = ("org", "page", "order")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    org: str
    page: _common_pb2.PageRequest
    order: str
    def __init__(self, org: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., order: _Optional[str] = ...) -> None: ...

class CreateEvalRunRequest(_message.Message):
    __slots__ = ("org", "eval_id", "name", "data_source_json", "metadata_json")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    name: str
    data_source_json: str
    metadata_json: str
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ..., name: _Optional[str] = ..., data_source_json: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class GetEvalRunRequest(_message.Message):
    __slots__ = ("org", "eval_id", "run_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    run_id: str
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class ListEvalRunsRequest(_message.Message):
    __slots__ = ("org", "eval_id", "page", "order", "status")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    page: _common_pb2.PageRequest
    order: str
    status: str
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., order: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ListEvalRunOutputItemsRequest(_message.Message):
    __slots__ = ("org", "eval_id", "run_id", "page", "order", "status")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    run_id: str
    page: _common_pb2.PageRequest
    order: str
    status: str
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ..., run_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., order: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class CompareEvalRunsRequest(_message.Message):
    __slots__ = ("org", "eval_id", "baseline_run_id", "candidate_run_id", "pairwise")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    baseline_run_id: str
    candidate_run_id: str
    pairwise: bool
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ..., baseline_run_id: _Optional[str] = ..., candidate_run_id: _Optional[str] = ..., pairwise: _Optional[bool] = ...) -> None: ...

class GetEvalRunReportRequest(_message.Message):
    __slots__ = ("org", "eval_id", "run_id", "compare_with_run_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    EVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    COMPARE_WITH_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    eval_id: str
    run_id: str
    compare_with_run_id: str
    def __init__(self, org: _Optional[str] = ..., eval_id: _Optional[str] = ..., run_id: _Optional[str] = ..., compare_with_run_id: _Optional[str] = ...) -> None: ...

class EvalRunReport(_message.Message):
    __slots__ = ("html",)
    HTML_FIELD_NUMBER: _ClassVar[int]
    html: str
    def __init__(self, html: _Optional[str] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("output", "reference")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    output: str
    reference: str
    def __init__(self, output: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class SampleGrade(_message.Message):
    __slots__ = ("exact_match", "json_valid")
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    JSON_VALID_FIELD_NUMBER: _ClassVar[int]
    exact_match: bool
    json_valid: bool
    def __init__(self, exact_match: _Optional[bool] = ..., json_valid: _Optional[bool] = ...) -> None: ...

class GradeSamplesRequest(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class GradeSamplesResponse(_message.Message):
    __slots__ = ("grades", "exact_match_rate", "json_valid_rate")
    GRADES_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    JSON_VALID_RATE_FIELD_NUMBER: _ClassVar[int]
    grades: _containers.RepeatedCompositeFieldContainer[SampleGrade]
    exact_match_rate: float
    json_valid_rate: float
    def __init__(self, grades: _Optional[_Iterable[_Union[SampleGrade, _Mapping]]] = ..., exact_match_rate: _Optional[float] = ..., json_valid_rate: _Optional[float] = ...) -> None: ...
