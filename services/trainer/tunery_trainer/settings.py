"""`TUNERY_TRAINER_*` settings (the shared `TUNERY_*` ones come from CommonSettings)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_TRAINER_", extra="ignore")

    # Jobs one process trains at once; 0 runs the control plane only (no GPU needed).
    workers: int = Field(1, ge=0, le=16)
    work_dir: Path | None = None  # default: TUNERY_HOME/trainer
    ack_wait_s: float = Field(60, gt=1)  # a silent worker's job is redelivered after this
    heartbeat_s: float = Field(10, gt=0)
    validation_timeout_s: float = Field(120, gt=0)
    torch_threads: int = Field(0, ge=0)  # 0: torch's default
