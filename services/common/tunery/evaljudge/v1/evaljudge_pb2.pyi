from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
