"""Gateway settings: the shared `TUNERY_*` ones plus `TUNERY_GATEWAY_*`."""

from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from tunery_common.apikeys import INTERNAL_ORG, ApiKeys, ensure_default_key, parse_api_keys
from tunery_common.settings import CommonSettings

from tunery_gateway.ratelimit import RateLimitConfig, parse_rate_limits


def _gateway_env(name: str) -> AliasChoices:
    # An explicit alias because the class's env prefix stays TUNERY_ for the shared settings.
    return AliasChoices(f"TUNERY_GATEWAY_{name.upper()}")


class GatewaySettings(CommonSettings):
    # hide_input_in_errors: a malformed TUNERY_API_KEYS must not print the keys in the error.
    model_config = SettingsConfigDict(
        env_prefix="TUNERY_", extra="ignore", validate_by_name=True, hide_input_in_errors=True
    )

    # Deadline of a chat completion (generation can be long on CPU).
    request_timeout_s: float = Field(600.0, gt=0, validation_alias=_gateway_env("request_timeout_s"))
    # Deadline of control-plane calls (jobs, models): these answer from records, never block long.
    rpc_timeout_s: float = Field(30.0, gt=0, validation_alias=_gateway_env("rpc_timeout_s"))
    # Largest JSON request body (chat histories); uploads have their own TUNERY_MAX_UPLOAD_MB.
    max_request_mb: int = Field(32, gt=0, validation_alias=_gateway_env("max_request_mb"))
    # Comma-separated browser origins allowed to call the API; empty disables CORS.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_gateway_env("cors_origins")
    )

    # Per API key and model (see ratelimit.py): inline JSON or the path of a .json / .toml file.
    rate_limits: Annotated[RateLimitConfig, NoDecode] = Field(
        default_factory=RateLimitConfig, validation_alias=_gateway_env("rate_limits")
    )
    # Tokens a request without max_tokens reserves: the inference service's default max_tokens.
    rate_limit_default_max_tokens: int = Field(
        512, gt=0, validation_alias=_gateway_env("rate_limit_default_max_tokens")
    )

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: object) -> object:
        return parse_rate_limits(value) if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        parse_api_keys(value)  # fail at startup, not at the first request
        return value

    def load_api_keys(self) -> ApiKeys:
        """The configured keys (without any, the `default` org's key kept under TUNERY_HOME), and
        the platform services' internal key."""
        spec = self.api_keys or ensure_default_key(self.home)
        if self.internal_api_key:
            spec += f",{self.internal_api_key}:{INTERNAL_ORG}"
        return ApiKeys.from_spec(spec)

    def rate_limit_config(self) -> RateLimitConfig:
        """The rate limits, the internal key exempt (eval-judge's calls are not user traffic)."""
        if not self.internal_api_key:
            return self.rate_limits
        exempt = [*self.rate_limits.exempt_keys, self.internal_api_key]
        return self.rate_limits.model_copy(update={"exempt_keys": exempt})
