"""Managed fine-tuning providers: models that an OpenAI-compatible service trains for us.

A job whose `model` is a provider's local model name is run at that provider through the
`openai` SDK (see `managed.py`) instead of on our own workers. The providers come from
`TUNERY_TRAINER_PROVIDERS_FILE` (TOML) or `TUNERY_TRAINER_PROVIDERS` (JSON), for example:

    [[providers]]
    name = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"      # or api_key = "sk-..." (prefer the environment)
    poll_interval_s = 30
    [providers.models]                  # local model name = the provider's model name
    "gpt-4o-mini" = "gpt-4o-mini-2024-07-18"

The JSON form is the same list of providers, bare or as {"providers": [...]}. A bad file fails
the start-up with the file, the field and what is wrong.
"""

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from tunery_common.basemodels import CATALOG

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ProviderConfigError(ValueError):
    """The providers configuration cannot be used; the message names the source and the field."""


class Provider(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    base_url: str = Field(pattern=r"^https?://\S+$")  # the API root, e.g. https://api.openai.com/v1
    api_key: SecretStr  # read from api_key_env when that is given
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    models: dict[ModelName, ModelName] = Field(min_length=1)  # local name -> provider's name
    poll_interval_s: float = Field(10.0, gt=0, le=3600)
    request_timeout_s: float = Field(60.0, gt=0)
    # How long an unreachable provider (connection errors, 408/429/5xx) is retried, with
    # back-off, before the job fails; a rejected key or request fails at once.
    retry_for_s: float = Field(300.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _resolve_key(cls, data):
        """Reads `api_key_env` once, at start-up: a missing variable fails there, not in a job."""
        if not isinstance(data, dict):
            return data
        if (data.get("api_key") is None) == (data.get("api_key_env") is None):
            raise ValueError("give exactly one of api_key and api_key_env")
        env = data.get("api_key_env")
        if isinstance(env, str):
            value = os.environ.get(env)
            if not value:
                raise ValueError(f"environment variable {env} (api_key_env) is not set")
            data = {**data, "api_key": value}
        return data

    def remote_model(self, local_name: str) -> str:
        return self.models[local_name]


class ProvidersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[Provider] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "ProvidersConfig":
        seen_providers: set[str] = set()
        seen_models: dict[str, str] = {}
        for provider in self.providers:
            if provider.name in seen_providers:
                raise ValueError(f"provider name {provider.name!r} is used twice")
            seen_providers.add(provider.name)
            for local in provider.models:
                if local in CATALOG:
                    raise ValueError(
                        f"provider {provider.name!r}: model name {local!r} is a local base model; "
                        "give the provider's model another local name"
                    )
                if local in seen_models:
                    raise ValueError(
                        f"model name {local!r} is offered by providers {seen_models[local]!r} "
                        f"and {provider.name!r}"
                    )
                seen_models[local] = provider.name
        return self


class ProviderCatalog:
    """The configured providers, looked up by the local model names they offer."""

    def __init__(self, providers: list[Provider]):
        self.providers = providers
        self._by_model = {local: p for p in providers for local in p.models}

    def provider_for(self, model: str) -> Provider | None:
        return self._by_model.get(model)

    @property
    def model_names(self) -> list[str]:
        return sorted(self._by_model)


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_TRAINER_", extra="ignore")

    providers_file: Path | None = None
    providers: str | None = None  # JSON; kept as text so errors can name line and column


def load_providers(settings: ProviderSettings | None = None) -> ProviderCatalog:
    """The providers of the environment (none when neither variable is set); fails fast on bad config."""
    settings = settings or ProviderSettings()
    if settings.providers_file is not None and settings.providers is not None:
        raise ProviderConfigError(
            "set either TUNERY_TRAINER_PROVIDERS_FILE or TUNERY_TRAINER_PROVIDERS, not both"
        )
    if settings.providers_file is not None:
        source = f"TUNERY_TRAINER_PROVIDERS_FILE={settings.providers_file}"
        try:
            raw = tomllib.loads(settings.providers_file.read_text())
        except OSError as exc:
            raise ProviderConfigError(f"{source}: cannot read the file: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ProviderConfigError(f"{source}: not valid TOML: {exc}") from None
    elif settings.providers is not None:
        source = "TUNERY_TRAINER_PROVIDERS"
        try:
            raw = json.loads(settings.providers)
        except json.JSONDecodeError as exc:
            raise ProviderConfigError(
                f"{source}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        if isinstance(raw, list):
            raw = {"providers": raw}
    else:
        return ProviderCatalog([])
    return ProviderCatalog(parse_providers(raw, source).providers)


def parse_providers(raw: object, source: str) -> ProvidersConfig:
    try:
        return ProvidersConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = _field_path(err["loc"])
        where = f"{source}: {field}: " if field else f"{source}: "
        more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        message = err["msg"].removeprefix("Value error, ")
        raise ProviderConfigError(f"{where}{message}{more}") from None


def _field_path(loc: tuple) -> str:
    """`providers[0].models.gpt-4o`, the path of a validation error inside the config."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
