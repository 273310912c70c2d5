"""One engine per base model, loaded on first use (or at start-up with `preload`)."""

import asyncio
import logging
from pathlib import Path

from tunery_common.basemodels import ensure_base_model

from tunery_inference.engines.hf import HFEngine
from tunery_inference.settings import InferenceSettings

log = logging.getLogger(__name__)


class EnginePool:
    def __init__(self, model_cache: Path, settings: InferenceSettings | None = None):
        self.model_cache = model_cache
        self.settings = settings or InferenceSettings()
        self._engines: dict[str, HFEngine] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, base_model: str) -> HFEngine:
        engine = self._engines.get(base_model)
        if engine is not None:
            return engine
        async with self._locks.setdefault(base_model, asyncio.Lock()):
            if base_model not in self._engines:
                log.info("loading base model %s", base_model)
                model_dir = await asyncio.to_thread(ensure_base_model, base_model, self.model_cache)
                s = self.settings
                self._engines[base_model] = await asyncio.to_thread(
                    lambda: HFEngine(
                        model_dir,
                        max_batch=s.max_batch,
                        prefill_chunk=s.prefill_chunk,
                        max_loras=s.max_loras,
                        max_cpu_loras=s.max_cpu_loras,
                    )
                )
                log.info("base model %s loaded", base_model)
        return self._engines[base_model]
