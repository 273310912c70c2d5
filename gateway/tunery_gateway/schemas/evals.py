"""Evals (OpenAI's Evals API): request bodies and the objects answered, from eval-judge's records.

eval-judge checks the free-form parts (item schema, testing criteria, data sources) and names the
bad field; these models check the envelope.
"""

import json
from typing import Any

from pydantic import Field
from tunery.evaljudge.v1 import evaljudge_pb2

from tunery_gateway.schemas.base import RequestModel

STATUS_NAMES = {"running": "in_progress"}  # the record's lease status, as OpenAI names it


class EvalCreate(RequestModel):
    name: str = Field("", max_length=256)
    data_source_config: dict[str, Any]
    testing_criteria: list[Any]
    metadata: dict[str, str] | None = None

    def to_proto(self, org: str) -> evaljudge_pb2.CreateEvalRequest:
        return evaljudge_pb2.CreateEvalRequest(
            org=org,
            name=self.name,
            data_source_config_json=json.dumps(self.data_source_config),
            testing_criteria_json=json.dumps(self.testing_criteria),
            metadata_json=json.dumps(self.metadata) if self.metadata is not None else "",
        )


class EvalRunCreate(RequestModel):
    name: str = Field("", max_length=256)
    data_source: dict[str, Any]
    metadata: dict[str, str] | None = None

    def to_proto(self, org: str, eval_id: str) -> evaljudge_pb2.CreateEvalRunRequest:
        return evaljudge_pb2.CreateEvalRunRequest(
            org=org,
            eval_id=eval_id,
            name=self.name,
            data_source_json=json.dumps(self.data_source),
            metadata_json=json.dumps(self.metadata) if self.metadata is not None else "",
        )


def record(doc: evaljudge_pb2.EvalDocument) -> dict[str, Any]:
    return json.loads(doc.json)


def eval_object(doc: evaljudge_pb2.EvalDocument) -> dict[str, Any]:
    rec = record(doc)
    config = rec["data_source_config"]
    item_schema = config.get("item_schema", config.get("schema")) or {"type": "object"}
    properties: dict[str, Any] = {"item": item_schema}
    if config.get("include_sample_schema"):
        properties["sample"] = {"type": "object", "properties": {"output_text": {"type": "string"}}}
    return {
        "id": rec["id"],
        "object": "eval",
        "name": rec["name"],
        "created_at": rec["created_at"],
        "data_source_config": {
            "type": "custom",
            "schema": {"type": "object", "properties": properties, "required": list(properties)},
        },
        "testing_criteria": rec["testing_criteria"],
        "metadata": rec["metadata"],
    }


def run_object(doc: evaljudge_pb2.EvalDocument, report_url: str) -> dict[str, Any]:
    rec = record(doc)
    aggregates = rec.get("aggregates") or {}
    tokens = aggregates.get("tokens") or {}
    usage = []
    if rec.get("model") and tokens:
        usage.append(
            {
                "model_name": rec["model"],
                "invocation_count": rec["n_done"],
                "prompt_tokens": tokens["prompt_tokens"],
                "completion_tokens": tokens["completion_tokens"],
                "total_tokens": tokens["total_tokens"],
                "cached_tokens": 0,
            }
        )
    return {
        "id": rec["id"],
        "object": "eval.run",
        "eval_id": rec["eval_id"],
        "name": rec["name"],
        "status": STATUS_NAMES.get(rec["status"], rec["status"]),
        "created_at": rec["created_at"],
        "finished_at": rec.get("finished_at"),
        "model": rec.get("model") or "",
        "data_source": rec["data_source"],
        "result_counts": rec.get("result_counts") or {"total": 0, "passed": 0, "failed": 0, "errored": 0},
        "per_testing_criteria_results": rec.get("per_testing_criteria_results") or [],
        "per_model_usage": usage,
        "report_url": report_url,
        "error": rec.get("error"),
        "metadata": rec.get("metadata"),
        # Beyond OpenAI's object: progress, and the figures behind the counts.
        "progress": {"n_done": rec["n_done"], "n_items": rec["n_items"]},
        "aggregates": aggregates or None,
    }


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
