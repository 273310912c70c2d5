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
