"""Per-item results of a quick eval, one JSON document in the object store per eval."""

from pydantic import TypeAdapter
from tunery_common.bus import Bus
from tunery_common.records import QuickEvalRecord, QuickEvalResult

_RESULTS = TypeAdapter(list[QuickEvalResult])


async def save_results(bus: Bus, record: QuickEvalRecord, results: list[QuickEvalResult]) -> None:
    await bus.put_object(record.results_object, _RESULTS.dump_json(results))


async def load_results(bus: Bus, record: QuickEvalRecord) -> list[QuickEvalResult]:
    """Raises FileNotFoundError when the object is gone."""
    return _RESULTS.validate_json(await bus.get_object(record.results_object))
