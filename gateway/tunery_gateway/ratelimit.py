"""Rate limits per API key and model: requests and tokens per minute over a sliding window.

Each admitted request is an entry (time, tokens) in its (key, model) window. Tokens are reserved
at admission (a prompt estimate plus max_tokens) and corrected with the actual usage once the
answer is known. State lives in this process: each gateway replica limits on its own.

Limits come from TUNERY_GATEWAY_RATE_LIMITS (inline JSON, or the path of a .json / .toml file):

    {"base_models": {"rpm": 600, "tpm": 200000},
     "fine_tuned_models": {"rpm": 100},
     "models": {"smollm2-135m-instruct": {"tpm": 50000}},
     "orgs": {"acme": {"fine_tuned_models": {"rpm": 1000}, "models": {...}}},
     "exempt_orgs": ["internal"], "exempt_keys": ["<an API key>", "sha256:<its hex digest>"]}

The most specific setting wins, field by field: the org's model, the org's kind of model, the
model, the kind of model. A field absent inherits; `null` means unlimited.
"""

import functools
import json
import math
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tunery_common.apikeys import hash_key

WINDOW_S = 60.0
FINE_TUNED_PREFIX = "ft:"  # fine-tuned models, their checkpoints and promoted aliases


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1, description="requests per minute; null: unlimited")
    tpm: int | None = Field(None, ge=1, description="tokens per minute; null: unlimited")


class LimitScope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_models: Limit = Field(default_factory=Limit)
    fine_tuned_models: Limit = Field(default_factory=Limit)
    models: dict[str, Limit] = Field(default_factory=dict)

    def layers(self, model: str) -> list[Limit]:
        """This scope's settings for `model`, most specific first."""
        kind = self.fine_tuned_models if model.startswith(FINE_TUNED_PREFIX) else self.base_models
        return [limit for limit in (self.models.get(model), kind) if limit is not None]


class RateLimitConfig(LimitScope):
    # A fine-tuned model serves 100 requests a minute per key unless configured otherwise.
    fine_tuned_models: Limit = Field(default_factory=lambda: Limit(rpm=100))
    orgs: dict[str, LimitScope] = Field(default_factory=dict)
    exempt_orgs: list[str] = Field(default_factory=list)
    exempt_keys: list[str] = Field(default_factory=list)

    def limit_for(self, org: str, model: str) -> Limit:
        org_scope = self.orgs.get(org)
        layers = (org_scope.layers(model) if org_scope else []) + self.layers(model)
        resolved = {}
        for field in Limit.model_fields:
            given = next((layer for layer in layers if field in layer.model_fields_set), None)
            resolved[field] = getattr(given, field) if given else getattr(layers[-1], field)
        return Limit(**resolved)

    def exempt_key_hashes(self) -> set[str]:
        return {
            key.removeprefix("sha256:") if key.startswith("sha256:") else hash_key(key)
            for key in self.exempt_keys
        }


class RateLimitConfigError(ValueError):
    pass


def parse_rate_limits(spec: str) -> RateLimitConfig:
    """The config from inline JSON or a .json / .toml file; errors name the field at fault."""
    spec = spec.strip()
    if not spec:
        return RateLimitConfig()
    source = "TUNERY_GATEWAY_RATE_LIMITS"
    try:
        if spec.startswith("{"):
            data = json.loads(spec)
        else:
            path = Path(spec)
            source = str(path)
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as exc:
        raise RateLimitConfigError(f"{source}: cannot read the rate limits file: {exc}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RateLimitConfigError(f"{source}: not valid JSON/TOML: {exc}") from None
    try:
        return RateLimitConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise RateLimitConfigError(f"{source}: {problems}") from None


@dataclass(frozen=True)
class RateState:
    """What the x-ratelimit-* headers say; None where that limit is off."""

    limit_requests: int | None = None
    remaining_requests: int = 0
    reset_requests_s: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int = 0
    reset_tokens_s: float = 0.0

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.limit_requests is not None:
            headers["x-ratelimit-limit-requests"] = str(self.limit_requests)
            headers["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            headers["x-ratelimit-reset-requests"] = duration(self.reset_requests_s)
        if self.limit_tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            headers["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            headers["x-ratelimit-reset-tokens"] = duration(self.reset_tokens_s)
        return headers


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


class RateLimited(Exception):
    def __init__(self, kind: str, message: str, retry_after_s: float | None, state: RateState):
        super().__init__(message)
        self.kind = kind  # "requests" or "tokens", OpenAI's error type
        self.message = message
        self.retry_after_s = retry_after_s  # None: this request can never pass (too large)
        self.state = state


class _Entry:
    __slots__ = ("at", "tokens", "expired")

    def __init__(self, at: float, tokens: int):
        self.at = at
        self.tokens = tokens
        self.expired = False


class Window:
    """One (key, model)'s admitted requests of the last minute."""

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.tokens = 0

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0].at <= now - WINDOW_S:
            entry = self.entries.popleft()
            entry.expired = True
            self.tokens -= entry.tokens

    def wait_for_requests(self, now: float, limit: int) -> float:
        """Seconds until one more request fits under `limit`."""
        excess = len(self.entries) - limit  # entries to expire before one more fits
        return self.entries[excess].at + WINDOW_S - now

    def wait_for_tokens(self, now: float, limit: int, wanted: int) -> float:
        """Seconds until `wanted` more tokens fit under `limit` (wanted <= limit)."""
        used = self.tokens
        for entry in self.entries:
            used -= entry.tokens
            if used + wanted <= limit:
                return entry.at + WINDOW_S - now
        return 0.0

    def reset_s(self, now: float) -> float:
        """Seconds until the window is empty again."""
        return self.entries[-1].at + WINDOW_S - now if self.entries else 0.0


class Ticket:
    """An admitted request's reservation; `settle` replaces it with the tokens actually used."""

    def __init__(self, window: Window | None, entry: _Entry | None, state: RateState):
        self._window = window
        self._entry = entry
        self.state = state
        self.settled = False

    @property
    def reserved(self) -> int:
        return self._entry.tokens if self._entry else 0

    def settle(self, tokens: int) -> None:
        """Idempotent: the first call counts (an entry already expired changes nothing)."""
        if self.settled:
            return
        self.settled = True
        if self._window is not None and self._entry is not None and not self._entry.expired:
            self._window.tokens += tokens - self._entry.tokens
            self._entry.tokens = tokens


class RateLimiter:
    """Admits or refuses requests; `clock` is injectable so tests need no sleeps."""

    SWEEP_EVERY = 1000  # admissions between sweeps of idle windows

    def __init__(self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self._exempt_keys = config.exempt_key_hashes()
        self._exempt_orgs = set(config.exempt_orgs)
        self._windows: dict[tuple[str, str], Window] = {}
        self._admissions = 0
        # The config does not change while the gateway runs; bounded: model names come from clients.
        self._limit_for = functools.lru_cache(maxsize=4096)(config.limit_for)

    def is_exempt(self, key_hash: str, org: str) -> bool:
        return key_hash in self._exempt_keys or org in self._exempt_orgs

    def admit(self, key_hash: str, org: str, model: str, tokens: int) -> Ticket:
        """Reserves one request and `tokens` for (key, model), or raises RateLimited."""
        limit = self._limit_for(org, model)
        if self.is_exempt(key_hash, org) or (limit.rpm is None and limit.tpm is None):
            return Ticket(None, None, RateState())
        now = self.clock()
        self._sweep(now)
        window = self._windows.setdefault((key_hash, model), Window())
        window.expire(now)
        if limit.tpm is not None and tokens > limit.tpm:
            message = (
                f"Request too large for {model} on tokens per min (TPM): Limit {limit.tpm}, "
                f"Requested {tokens} (prompt estimate + max_tokens). Lower max_tokens or shorten the prompt."
            )
            raise RateLimited("tokens", message, None, self._state(window, limit, now))
        if limit.rpm is not None and len(window.entries) >= limit.rpm:
            wait = window.wait_for_requests(now, limit.rpm)
            message = (
                f"Rate limit reached for {model} on requests per min (RPM): Limit {limit.rpm}, "
                f"Used {len(window.entries)}, Requested 1. Please try again in {duration(wait)}."
            )
            raise RateLimited("requests", message, wait, self._state(window, limit, now))
        if limit.tpm is not None and window.tokens + tokens > limit.tpm:
            wait = window.wait_for_tokens(now, limit.tpm, tokens)
            message = (
                f"Rate limit reached for {model} on tokens per min (TPM): Limit {limit.tpm}, "
                f"Used {window.tokens}, Requested {tokens}. Please try again in {duration(wait)}."
            )
            raise RateLimited("tokens", message, wait, self._state(window, limit, now))
        entry = _Entry(now, tokens)
        window.entries.append(entry)
        window.tokens += tokens
        return Ticket(window, entry, self._state(window, limit, now))

    @staticmethod
    def _state(window: Window, limit: Limit, now: float) -> RateState:
        reset = window.reset_s(now)
        return RateState(
            limit_requests=limit.rpm,
            remaining_requests=max(0, (limit.rpm or 0) - len(window.entries)),
            reset_requests_s=reset,
            limit_tokens=limit.tpm,
            remaining_tokens=max(0, (limit.tpm or 0) - window.tokens),
            reset_tokens_s=reset,
        )

    def _sweep(self, now: float) -> None:
        """Drops windows with nothing left in them, so idle keys do not hold memory."""
        self._admissions += 1
        if self._admissions % self.SWEEP_EVERY:
            return
        for key, window in list(self._windows.items()):
            window.expire(now)
            if not window.entries:
                del self._windows[key]
