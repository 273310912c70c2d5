"""The data of an eval run: items (and pre-filled samples) from a run's `data_source`.

Shapes are OpenAI's Evals API ones. A `jsonl` source carries each item with its sample already
there (`{"item": {...}, "sample": {"output_text": "..."}}`); a `completions` source has the model
under test answer each item, the prompt being `input_messages` (a template over the item, or a
reference to a list of chat messages inside it, optionally without its final assistant message:
`drop_final_assistant`). Every error names the field the way the client
wrote it (`data_source.source.content[2].item`).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import SchemaError, validators
from jsonschema.exceptions import best_match

from tunery_evaljudge.general_set import eval_items as general_abilities_items
from tunery_evaljudge.templates import Sample, TemplateError, references, render

MAX_ITEMS = 10_000


class DataSourceError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


@dataclass(frozen=True)
class RunItem:
    index: int
    item: dict[str, Any]
    sample: Sample | None  # pre-filled (jsonl sources); None: the model under test answers


def check_item_schema(config: Any) -> dict[str, Any] | None:
    """The item schema of a `custom` data source config, checked; None when it sets none."""
    if not isinstance(config, Mapping) or config.get("type") != "custom":
        raise DataSourceError(
            'only {"type": "custom", "item_schema": {...}} is supported', "data_source_config.type"
        )
    unknown = set(config) - {"type", "item_schema", "include_sample_schema", "schema"}
    if unknown:
        raise DataSourceError("unknown field", f"data_source_config.{sorted(unknown)[0]}")
    schema = config.get("item_schema", config.get("schema"))
    if schema is None:
        return None
    if not isinstance(schema, Mapping):
        raise DataSourceError("a JSON Schema object", "data_source_config.item_schema")
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise DataSourceError(
            f"not a valid JSON Schema: {exc.message}", "data_source_config.item_schema"
        ) from None
    return dict(schema)


def _sample_of(value: Any, where: str) -> Sample:
    """A pre-filled sample: `{"output_text": ...}`, OpenAI's `{"output": [{"content": ...}]}`, or text."""
    if isinstance(value, str):
        return Sample(output_text=value)
    if isinstance(value, Mapping):
        if isinstance(value.get("output_text"), str):
            text = value["output_text"]
        elif (
            isinstance(value.get("output"), list)
            and value["output"]
            and isinstance(value["output"][-1], Mapping)
        ):
            text = str(value["output"][-1].get("content") or "")
        else:
            raise DataSourceError("a sample needs output_text (or output: [{content}])", where)
        usage = value.get("usage") if isinstance(value.get("usage"), Mapping) else {}
        return Sample(
            output_text=text,
            latency_ms=value.get("latency_ms"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
    raise DataSourceError("a sample is an object with output_text, or a string", where)


def _rows(source: Any, file_bytes: bytes | None, where: str) -> list[tuple[Any, str]]:
    """(row, where it came from) of a source: file_content entries or the lines of a file."""
    if not isinstance(source, Mapping):
        raise DataSourceError("an object with type file_content, file_id or general_abilities", where)
    kind = source.get("type")
    if kind == "general_abilities":  # the shipped regression set (general_set.py)
        return [(item, f"{where} item {item['id']}") for item in general_abilities_items()]
    if kind == "file_content":
        content = source.get("content")
        if not isinstance(content, list) or not content:
            raise DataSourceError("a non-empty list of {item, sample}", f"{where}.content")
        return [(row, f"{where}.content[{i}]") for i, row in enumerate(content)]
    if kind == "file_id":
        rows = []
        text = (file_bytes or b"").decode("utf-8", errors="replace")
        for line_no, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                rows.append((json.loads(raw), f"{where}.id: line {line_no}"))
            except ValueError as exc:
                raise DataSourceError(f"line {line_no} is not JSON: {exc}", f"{where}.id") from None
        if not rows:
            raise DataSourceError("the file holds no item", f"{where}.id")
        return rows
    raise DataSourceError("file_content, file_id or general_abilities", f"{where}.type")


def load_run_items(
    data_source: Mapping[str, Any], item_schema: dict[str, Any] | None, file_bytes: bytes | None = None
) -> list[RunItem]:
    """Every item of a run's data source, checked against the eval's item schema."""
    kind = data_source.get("type")
    rows = _rows(data_source.get("source"), file_bytes, "data_source.source")
    if len(rows) > MAX_ITEMS:
        raise DataSourceError(f"at most {MAX_ITEMS} items", "data_source.source")
    validator = validators.validator_for(item_schema)(item_schema) if item_schema else None
    items = []
    for index, (row, where) in enumerate(rows):
        # A row is {"item": ..., "sample": ...}; a file line without "item" is the item itself.
        is_wrapped = isinstance(row, Mapping) and "item" in row
        item = row["item"] if is_wrapped else row
        if not isinstance(item, Mapping):
            raise DataSourceError("an item is a JSON object", f"{where}.item")
        if validator is not None and (error := best_match(validator.iter_errors(item))) is not None:
            raise DataSourceError(
                f"does not match the eval's item_schema at {error.json_path}: {error.message}",
                f"{where}.item",
            )
        sample = None
        if kind == "jsonl":
            raw_sample = row.get("sample") if is_wrapped else None
            if raw_sample is None:
                raise DataSourceError("a jsonl run needs each item's sample", f"{where}.sample")
            sample = _sample_of(raw_sample, f"{where}.sample")
        items.append(RunItem(index, dict(item), sample))
    return items


@dataclass(frozen=True)
class CompletionsConfig:
    model: str
    template: list[dict[str, str]] | None  # messages whose content are templates over the item
    item_reference: str | None  # e.g. "item.messages": a list of chat messages in each item
    # A chat file's item ends with the assistant's answer, the reference: not part of the prompt.
    drop_final_assistant: bool
    max_tokens: int | None
    temperature: float
    top_p: float | None
    seed: int

    def messages(self, item: Mapping[str, Any]) -> list[dict[str, str]]:
        """The prompt for one item; TemplateError when it refers to what the item lacks."""
        if self.template is not None:
            return [{"role": m["role"], "content": render(m["content"], item)} for m in self.template]
        value: Any = item
        for step in (self.item_reference or "").removeprefix("item.").split("."):
            if not isinstance(value, Mapping) or step not in value:
                raise TemplateError(f"the item has no {self.item_reference}")
            value = value[step]
        if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
            raise TemplateError(f"{self.item_reference} is not a list of chat messages")
        if self.drop_final_assistant and value and value[-1].get("role") == "assistant":
            value = value[:-1]
        return [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")} for m in value]


def completions_config(data_source: Mapping[str, Any]) -> CompletionsConfig:
    where = "data_source"
    model = data_source.get("model")
    if not isinstance(model, str) or not model:
        raise DataSourceError("the model under test", f"{where}.model")
    messages = data_source.get("input_messages")
    if not isinstance(messages, Mapping):
        raise DataSourceError(
            "{type: template, template: [...]} or {type: item_reference, ...}", f"{where}.input_messages"
        )
    template = reference = None
    drop_final_assistant = False
    if messages.get("type") == "template":
        template = []
        raw = messages.get("template")
        if not isinstance(raw, list) or not raw:
            raise DataSourceError("a non-empty list of messages", f"{where}.input_messages.template")
        for i, message in enumerate(raw):
            here = f"{where}.input_messages.template[{i}]"
            if not isinstance(message, Mapping) or message.get("role") not in (
                "system",
                "developer",
                "user",
                "assistant",
            ):
                raise DataSourceError(
                    "a message with role system, developer, user or assistant", f"{here}.role"
                )
            content = message.get("content")
            if isinstance(content, Mapping) and content.get("type") in ("input_text", "output_text"):
                content = content.get("text")
            if not isinstance(content, str):
                raise DataSourceError("text content", f"{here}.content")
            try:
                references(content)
            except TemplateError as exc:
                raise DataSourceError(str(exc), f"{here}.content") from None
            role = "system" if message["role"] == "developer" else message["role"]
            template.append({"role": role, "content": content})
    elif messages.get("type") == "item_reference":
        reference = messages.get("item_reference")
        if not isinstance(reference, str) or not reference.startswith("item."):
            raise DataSourceError("a reference like item.messages", f"{where}.input_messages.item_reference")
        drop_final_assistant = messages.get("drop_final_assistant", False)
        if not isinstance(drop_final_assistant, bool):
            raise DataSourceError("true or false", f"{where}.input_messages.drop_final_assistant")
    else:
        raise DataSourceError("template or item_reference", f"{where}.input_messages.type")
    params = data_source.get("sampling_params") or {}
    if not isinstance(params, Mapping):
        raise DataSourceError("an object", f"{where}.sampling_params")
    max_tokens = params.get("max_completion_tokens", params.get("max_completions_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise DataSourceError("a positive integer", f"{where}.sampling_params.max_completion_tokens")
    return CompletionsConfig(
        model=model,
        template=template,
        item_reference=reference,
        drop_final_assistant=drop_final_assistant,
        max_tokens=max_tokens,
        temperature=float(params.get("temperature") or 0.0),
        top_p=params.get("top_p"),
        seed=int(params.get("seed") or 0),
    )


def check_data_source(data_source: Any) -> str:
    """The data source's type once its shape is right."""
    if not isinstance(data_source, Mapping):
        raise DataSourceError("an object with type jsonl or completions", "data_source")
    kind = data_source.get("type")
    if kind == "completions":
        completions_config(data_source)
    elif kind != "jsonl":
        raise DataSourceError("jsonl or completions", "data_source.type")
    return kind
