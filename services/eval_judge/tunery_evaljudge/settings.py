"""`TUNERY_EVALJUDGE_*` settings (the shared `TUNERY_*` ones come from CommonSettings)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EvalJudgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_EVALJUDGE_", extra="ignore")

    # Eval runs one process runs at once; 0 runs the control plane only.
    workers: int = Field(1, ge=0, le=16)
    ack_wait_s: float = Field(60, gt=1)  # a silent worker's eval is redelivered after this
    heartbeat_s: float = Field(10, gt=0)
    # Requests one run keeps in flight to inference, which decodes them in one batch.
    concurrency: int = Field(8, ge=1, le=64)
    # Deadline of one completion, waiting for inference to come up included.
    request_timeout_s: float = Field(300, gt=0)
    # Deadline of inference's model lookup when a run is created.
    validation_timeout_s: float = Field(120, gt=0)
    # The LLM judge (score_model graders, pairwise comparisons): any OpenAI-compatible endpoint.
    # Unset: this stack's own gateway (TUNERY_HOST/TUNERY_PORT) with the `default` org's key.
    judge_base_url: str | None = None
    judge_api_key: str | None = None
    judge_model: str = "smollm2-135m-instruct"  # pairwise comparisons; score_model graders name theirs
    judge_timeout_s: float = Field(300, gt=0)
