"""`TUNERY_TRAINER_*` settings (the shared `TUNERY_*` ones come from CommonSettings)."""

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_TRAINER_", extra="ignore")

    # Jobs one process trains at once; 0 runs the control plane only (no GPU needed).
    workers: int = Field(1, ge=0, le=16)
    # One worker per device ("cpu", "cuda:0,cuda:1"), each training one job at a time on its device;
    # when set it replaces `workers`. Unset: `workers` workers on the default device.
    devices: Annotated[list[str], NoDecode] = Field(default_factory=list)
    work_dir: Path | None = None  # default: TUNERY_HOME/trainer
    ack_wait_s: float = Field(60, gt=1)  # a silent worker's job is redelivered after this
    heartbeat_s: float = Field(10, gt=0)
    validation_timeout_s: float = Field(120, gt=0)
    torch_threads: int = Field(0, ge=0)  # 0: torch's default
    # The largest LoRA rank a job may ask for: the serving engine's default max_lora_rank, so every
    # adapter trained here can be served.
    max_lora_rank: int = Field(64, ge=1)

    @field_validator("devices", mode="before")
    @classmethod
    def _split_devices(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, value: list[str]) -> list[str]:
        for device in value:
            if not _DEVICE.match(device):
                raise ValueError(f"{device!r} is not a device; use cpu, cuda or cuda:<index>")
        if len(set(value)) != len(value):
            raise ValueError("a device is listed twice; one worker trains on each device")
        return value

    def worker_devices(self) -> list[str | None]:
        """The device of each worker; None: the default one (the first GPU, else the CPU)."""
        return list(self.devices) if self.devices else [None] * self.workers
