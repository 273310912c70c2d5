"""`json_valid` (the answer parses as JSON) and `json_schema` (it also satisfies a JSON Schema).

The answer must be the JSON document itself: surrounding prose or code fences fail, because a
caller parsing the answer would fail on them too.
"""

import json
from collections.abc import Mapping
from typing import Any, Literal

from jsonschema import SchemaError, ValidationError, validators
from jsonschema.exceptions import best_match
from pydantic import Field, PrivateAttr, field_validator

from tunery_evaljudge.graders.base import Grader, GradeResult, TemplateStr, clip
from tunery_evaljudge.templates import Sample, SampleFieldError, render

MAX_REPORTED_ERRORS = 5


def _parse(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"


class JsonValidGrader(Grader):
    type: Literal["json_valid"]
    input: TemplateStr = "{{sample.output_text}}"

    def grade(self, item: Mapping[str, Any], sample: Sample) -> GradeResult:
        try:
            text = render(self.input, item, sample)
        except SampleFieldError as exc:
            return self.failed(str(exc))
        _, error = _parse(text)
        if error:
            return self.failed(error, input=clip(text))
        return self.result(1.0, True)


def _error_detail(error: ValidationError) -> dict[str, str]:
    return {"path": error.json_path, "message": error.message}


class JsonSchemaGrader(Grader):
    type: Literal["json_schema"]
    input: TemplateStr = "{{sample.output_text}}"
    # `schema` would shadow a pydantic BaseModel attribute; the JSON key stays "schema".
    json_schema: dict[str, Any] = Field(alias="schema")
    _validator: Any = PrivateAttr()

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            where = exc.json_path if exc.path else "$"
            raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        return schema

    def model_post_init(self, context: Any) -> None:
        self._validator = validators.validator_for(self.json_schema)(self.json_schema)

    def grade(self, item: Mapping[str, Any], sample: Sample) -> GradeResult:
        try:
            text = render(self.input, item, sample)
        except SampleFieldError as exc:
            return self.failed(str(exc))
        value, error = _parse(text)
        if error:
            return self.failed(error, input=clip(text))
        errors = list(self._validator.iter_errors(value))
        if not errors:
            return self.result(1.0, True)
        first = best_match(errors)
        detail = _error_detail(first)
        return self.failed(
            f"{detail['path']}: {detail['message']}",
            **detail,
            errors=[_error_detail(e) for e in errors[:MAX_REPORTED_ERRORS]],
            n_errors=len(errors),
        )
