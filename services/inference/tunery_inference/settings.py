"""`TUNERY_INFERENCE_*` settings (the shared `TUNERY_*` ones come from CommonSettings)."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_INFERENCE_", extra="ignore")

    # hf: transformers + PEFT; auto picks the best engine installed.
    engine: Literal["hf", "auto"] = "auto"
    adapter_dir: Path | None = None  # default: TUNERY_HOME/inference/adapters
    # Base models loaded at start-up (comma separated) instead of at their first request.
    preload: str = ""
    default_max_tokens: int = Field(512, gt=0)
    # Prometheus /metrics over HTTP: unset = not served, 0 = a free port (logged), else that port.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    # Continuous batching: sequences decoded together at most, and prompt tokens prefilled
    # between two decoding steps (a longer prompt is prefilled over several steps).
    max_batch: int = Field(64, gt=0)
    prefill_chunk: int = Field(512, gt=0)
    # LoRA adapters kept in the model (a row of any of them joins the running batch), and kept
    # read in host memory (brought back into the model without touching the disk). Evicted
    # least recently used first; an evicted adapter loads again on its next request.
    max_loras: int = Field(8, gt=0)
    max_cpu_loras: int = Field(32, gt=0)
