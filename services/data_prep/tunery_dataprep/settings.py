"""data-prep settings: `TUNERY_DATAPREP_*`, plus the shared model cache."""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tunery_common.settings import default_model_cache


class DataPrepSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_DATAPREP_", extra="ignore", validate_by_name=True)

    model_cache: Path = Field(
        default_factory=default_model_cache, validation_alias=AliasChoices("TUNERY_MODEL_CACHE")
    )
    # Billing counts at most this many tokens per example (the cookbook's MAX_TOKENS_PER_EXAMPLE).
    billing_token_cap: int = Field(16_385, gt=0)
    # A training file needs this many valid examples (OpenAI refuses fewer than 10).
    min_examples: int = Field(10, ge=1)
    max_reported_errors: int = Field(100, ge=1)
    # Lines parsed, counted and sketched per batch: bounds the memory the raw text takes.
    batch_lines: int = Field(2048, ge=1)
    # Files from this size on are read by worker processes (0 workers: one per idle CPU).
    workers: int = Field(0, ge=0)
    parallel_from_mb: int = Field(32, ge=0)
    # How workers start: "fork" is quick; a process with threads (the gRPC service) uses "forkserver".
    start_method: Literal["fork", "forkserver", "spawn"] = "fork"
    # The price table (prices.toml beside this module unless set) and the self-hosted GPU.
    prices_file: Path | None = None
    gpu: str | None = None  # one GPU type of the table; None: every type that fits the model
    gpu_usd_per_hour: float | None = Field(None, gt=0)  # overrides the table's hourly price
    # The training price that puts a figure on warnings (e.g. what a long system prompt costs).
    reference_backend: str = "gpt-4o-mini"
