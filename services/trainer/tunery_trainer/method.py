"""OpenAI's `method` object of a fine-tuning job: which training, with which hyperparameters.

`{"type": "supervised", "supervised": {"hyperparameters": {...}}}` trains on chat examples,
`{"type": "dpo", "dpo": {"hyperparameters": {..., "beta": ...}}}` on preference pairs. A bad value
is an error naming its full path, e.g. `method.supervised.hyperparameters.lora.rank`.
"""

from typing import Any

from pydantic import ValidationError
from tunery_common.grpc_errors import invalid

from tunery_trainer.hyperparams import DpoHyperparameters, Hyperparameters

MODELS: dict[str, type[Hyperparameters]] = {"supervised": Hyperparameters, "dpo": DpoHyperparameters}
# What data-prep calls the format of the examples each method trains on.
DATA_FORMATS = {"supervised": "chat", "dpo": "preference"}


def hyperparameters_path(method_type: str) -> str:
    return f"method.{method_type}.hyperparameters"


def parse_method(method: dict[str, Any] | None) -> dict[str, Any]:
    """The method, checked and normalised (only the keys given); raises ServiceError naming the field."""
    method = method or {"type": "supervised"}
    kind = method.get("type", "supervised")
    if kind not in MODELS:
        supported = " or ".join(repr(k) for k in MODELS)
        raise invalid(f"method type {kind!r} is not supported; use {supported}", "method.type")
    for key in method:
        if key != "type" and key not in MODELS:
            raise invalid(f"unknown key {key!r} in method", f"method.{key}")
        if key in MODELS and key != kind:
            raise invalid(
                f"method.{key} does not apply to a {kind!r} job; give its settings in method.{kind}",
                f"method.{key}",
            )
    section = method.get(kind) or {}
    if not isinstance(section, dict):
        raise invalid(f"method.{kind} must be an object", f"method.{kind}")
    for key in section:
        if key != "hyperparameters":
            raise invalid(f"unknown key {key!r} in method.{kind}", f"method.{kind}.{key}")
    values = section.get("hyperparameters") or {}
    prefix = hyperparameters_path(kind)
    if not isinstance(values, dict):
        raise invalid(f"{prefix} must be an object", prefix)
    try:
        parsed = MODELS[kind].model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = ".".join([prefix, *_input_path(values, error["loc"])])
        raise invalid(f"{param}: {error['msg']}", param) from None
    return {"type": kind, kind: {"hyperparameters": parsed.model_dump(mode="json", exclude_unset=True)}}


def _input_path(data: Any, loc: tuple) -> list[str]:
    """The part of a pydantic error location that names fields of the input.

    Locations also hold the tags of union members (`n_epochs.constrained-int`), which name no field.
    """
    path: list[str] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            path.append(str(part))
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            path[-1] = f"{path[-1]}[{part}]" if path else f"[{part}]"
        else:
            break
        data = data[part]
    return path


def method_type(method: dict[str, Any]) -> str:
    return method.get("type", "supervised")


def hyperparameters_of(method: dict[str, Any]) -> Hyperparameters:
    """The hyperparameters of a job's (already checked) method."""
    kind = method_type(method)
    return MODELS[kind].model_validate((method.get(kind) or {}).get("hyperparameters") or {})
