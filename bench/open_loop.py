"""Open-loop load: calls started at a fixed rate whether or not earlier ones finished, as
independent clients arrive; and the percentile the benchmarks report."""

import asyncio
import time


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def open_loop(call, rate: float, count: int) -> list[float]:
    """Latencies (s) of `count` calls started every 1/rate s."""

    async def timed() -> float:
        started = time.perf_counter()
        await call()
        return time.perf_counter() - started

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(timed()))
        await asyncio.sleep(1 / rate)
    return await asyncio.gather(*tasks)
