"""What every grader shares: its config model, its result, and the config error it raises."""

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tunery_evaljudge.templates import TemplateError, references

# Rendered texts kept in a result's details are cut to this: enough to recognise, not a copy.
DETAIL_CHARS = 300


class GraderConfigError(ValueError):
    """A testing criterion that cannot run; `param` names the field (`testing_criteria[1].operation`)."""

    def __init__(self, message: str, param: str):
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


class GradeResult(BaseModel):
    name: str
    type: str
    score: float | None  # None: not graded (no answer, or a judge failure), never a zero
    passed: bool | None  # None: no pass threshold, or not graded
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


def clip(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS] + "…"


def _check_template(template: str) -> str:
    try:
        references(template)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    return template


# A config field holding a template: refused at load time when a reference cannot name anything.
TemplateStr = Annotated[str, AfterValidator(_check_template)]


class Grader(BaseModel):
    """The fields every testing criterion has; unknown fields are refused (they are typos)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)

    def result(
        self, score: float | None, passed: bool | None, error: str | None = None, **details: Any
    ) -> GradeResult:
        return GradeResult(
            name=self.name, type=self.type, score=score, passed=passed, details=details, error=error
        )

    def failed(self, error: str, **details: Any) -> GradeResult:
        """A sample that fails this grader because of what it answered (not JSON, a missing field)."""
        return self.result(0.0, False, error, **details)
