"""A run's items and output items in the object store (thousands of them outgrow a KV value)."""

import json
from dataclasses import asdict
from typing import Any

from tunery_common.bus import Bus
from tunery_common.records import EvalRunRecord

from tunery_evaljudge.eval_data import RunItem
from tunery_evaljudge.eval_results import OUTPUT_ITEMS
from tunery_evaljudge.templates import Sample


def items_object(run: EvalRunRecord) -> str:
    return f"evals/{run.org}/{run.eval_id}/runs/{run.id}/items.json"


async def save_items(bus: Bus, run: EvalRunRecord, items: list[RunItem]) -> None:
    rows = [{"item": i.item, "sample": None if i.sample is None else asdict(i.sample)} for i in items]
    await bus.put_object(items_object(run), json.dumps(rows).encode())


async def load_items(bus: Bus, run: EvalRunRecord) -> list[RunItem]:
    """Raises FileNotFoundError when the object is gone."""
    rows = json.loads(await bus.get_object(items_object(run)))
    return [
        RunItem(index, row["item"], None if row["sample"] is None else Sample(**row["sample"]))
        for index, row in enumerate(rows)
    ]


async def save_outputs(bus: Bus, run: EvalRunRecord, outputs: list[dict[str, Any]]) -> None:
    await bus.put_object(run.output_items_object, OUTPUT_ITEMS.dump_json(outputs))


async def load_outputs(bus: Bus, run: EvalRunRecord) -> list[dict[str, Any]]:
    """Raises FileNotFoundError when the object is gone."""
    return OUTPUT_ITEMS.validate_json(await bus.get_object(run.output_items_object))
