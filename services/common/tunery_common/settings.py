"""Settings shared by every process; each service adds its own class with its env prefix."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_model_cache() -> Path:
    return Path.home() / ".cache" / "tunery" / "models"


class CommonSettings(BaseSettings):
    """`TUNERY_*` settings. Addresses of the services are `TUNERY_<SERVICE>_ADDR`."""

    model_config = SettingsConfigDict(env_prefix="TUNERY_", extra="ignore")

    home: Path = Path(".tunery")
    nats_url: str = "nats://127.0.0.1:4222"
    api_keys: str = ""
    # The key platform services call the gateway with (eval-judge's LLM judge): org `internal`,
    # never rate limited. `tunery up` makes one under TUNERY_HOME.
    internal_api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_mb: int = Field(512, gt=0)
    # Converted base models are large and slow to build: keep them out of TUNERY_HOME.
    model_cache: Path = Field(default_factory=default_model_cache)
    dataprep_addr: str = "127.0.0.1:50051"
    trainer_addr: str = "127.0.0.1:50052"
    evaljudge_addr: str = "127.0.0.1:50053"
    inference_addr: str = "127.0.0.1:50054"
    log_level: str = "INFO"
    log_json: bool = True


def grpc_port(addr: str) -> int:
    """The port of a `host:port` address, the one a service listens on."""
    return int(addr.rsplit(":", 1)[1])


class NatsSettings(BaseSettings):
    """How JetStream assets are created: R3 in a cluster, R1 locally."""

    model_config = SettingsConfigDict(env_prefix="TUNERY_NATS_", extra="ignore")

    replicas: int = Field(1, ge=1, le=5)
    connect_timeout_s: float = Field(60.0, gt=0)
