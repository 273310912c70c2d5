"""The gateway's rate limiter on its own: sliding minute windows per (API key, model), a clock
injected by the test (no sleeps), settlement of reserved tokens, and the config's resolution."""

import json

import pytest
from pydantic import ValidationError
from starlette.datastructures import State
from tunery.inference.v1 import inference_pb2
from tunery_common.apikeys import hash_key
from tunery_common.records import checkpoint_model_id
from tunery_gateway.ratelimit import (
    RateLimitConfig,
    RateLimitConfigError,
    RateLimited,
    RateLimiter,
    duration,
    parse_rate_limits,
)
from tunery_gateway.ratelimit_routes import Admission, prompt_estimate, reservation
from tunery_gateway.settings import GatewaySettings

BASE = "tiny-random-llama"
FT = "ft:tiny-random-llama:acme:tickets:ftjob-abc123"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(config: dict, clock: Clock) -> RateLimiter:
    return RateLimiter(RateLimitConfig.model_validate(config), clock)


def test_the_request_after_the_limit_waits_until_the_oldest_leaves_the_window():
    clock = Clock()
    rl = limiter({"base_models": {"rpm": 3}}, clock)
    for second in range(3):
        clock.now = 1000.0 + second * 10
        ticket = rl.admit("k", "acme", BASE, 10)
    assert ticket.state.remaining_requests == 0
    assert ticket.state.headers()["x-ratelimit-reset-requests"] == "1m0s"

    clock.now = 1030.0
    with pytest.raises(RateLimited) as info:
        rl.admit("k", "acme", BASE, 10)
    assert info.value.kind == "requests"
    assert info.value.retry_after_s == pytest.approx(30.0)  # the first, at 1000, leaves at 1060
    assert "requests per min (RPM): Limit 3, Used 3" in info.value.message
    assert info.value.state.headers()["x-ratelimit-remaining-requests"] == "0"

    clock.now = 1060.0
    assert rl.admit("k", "acme", BASE, 10).state.remaining_requests == 0


def test_windows_are_per_key_and_per_model():
    clock = Clock()
    rl = limiter({"base_models": {"rpm": 1}, "fine_tuned_models": {"rpm": 1}}, clock)
    rl.admit("k1", "acme", BASE, 1)
    with pytest.raises(RateLimited):
        rl.admit("k1", "acme", BASE, 1)
    rl.admit("k2", "acme", BASE, 1)  # another key of the same org
    rl.admit("k1", "acme", FT, 1)  # another model


def test_token_reservations_are_corrected_by_settlement():
    clock = Clock()
    rl = limiter({"base_models": {"tpm": 100}}, clock)
    first = rl.admit("k", "acme", BASE, 80)
    assert first.state.remaining_tokens == 20
    with pytest.raises(RateLimited) as info:
        rl.admit("k", "acme", BASE, 30)
    assert info.value.kind == "tokens"
    assert info.value.retry_after_s == pytest.approx(60.0)

    first.settle(25)  # the answer was short: the unused reservation is given back
    first.settle(80)  # only the first settlement counts
    assert rl.admit("k", "acme", BASE, 30).state.remaining_tokens == 100 - 25 - 30


def test_a_settlement_after_the_window_moved_on_changes_nothing():
    clock = Clock()
    rl = limiter({"base_models": {"tpm": 100}}, clock)
    slow = rl.admit("k", "acme", BASE, 90)
    clock.now += 61
    rl.admit("k", "acme", BASE, 90)  # expires the slow request's entry
    slow.settle(5)
    with pytest.raises(RateLimited):
        rl.admit("k", "acme", BASE, 20)


def test_token_retry_after_is_when_enough_tokens_leave():
    clock = Clock()
    rl = limiter({"base_models": {"tpm": 100}}, clock)
    rl.admit("k", "acme", BASE, 40)
    clock.now += 20
    rl.admit("k", "acme", BASE, 40)
    clock.now += 20
    with pytest.raises(RateLimited) as info:
        rl.admit("k", "acme", BASE, 70)  # 80 used: both must go
    assert info.value.retry_after_s == pytest.approx(40.0)
    with pytest.raises(RateLimited) as info:
        rl.admit("k", "acme", BASE, 30)  # the first one is enough
    assert info.value.retry_after_s == pytest.approx(20.0)


def test_a_request_larger_than_the_limit_is_never_admitted():
    rl = limiter({"base_models": {"tpm": 100}}, Clock())
    with pytest.raises(RateLimited) as info:
        rl.admit("k", "acme", BASE, 101)
    assert info.value.retry_after_s is None
    assert "Request too large" in info.value.message


def test_fine_tuned_models_default_to_100_rpm_and_base_models_to_no_limit():
    clock = Clock()
    rl = RateLimiter(RateLimitConfig(), clock)
    for _ in range(100):
        rl.admit("k", "acme", FT, 1)
    with pytest.raises(RateLimited):
        rl.admit("k", "acme", FT, 1)
    checkpoint = checkpoint_model_id(FT, 4)
    assert rl.admit("k", "acme", checkpoint, 1).state.limit_requests == 100
    base = rl.admit("k", "acme", BASE, 10**9)
    assert base.state.headers() == {}


def test_the_most_specific_setting_wins_field_by_field():
    config = RateLimitConfig.model_validate(
        {
            "base_models": {"rpm": 10, "tpm": 1000},
            "models": {BASE: {"rpm": 20}},
            "orgs": {
                "acme": {"base_models": {"tpm": 5000}, "models": {BASE: {"rpm": 30}}},
                "big": {"fine_tuned_models": {"rpm": None}},
            },
        }
    )
    assert config.limit_for("other", BASE).model_dump() == {"rpm": 20, "tpm": 1000}
    assert config.limit_for("other", "smollm2-135m-instruct").model_dump() == {"rpm": 10, "tpm": 1000}
    assert config.limit_for("acme", BASE).model_dump() == {"rpm": 30, "tpm": 5000}
    assert config.limit_for("acme", FT).model_dump() == {"rpm": 100, "tpm": None}
    assert config.limit_for("big", FT).model_dump() == {"rpm": None, "tpm": None}  # null: unlimited


def test_exempt_keys_and_orgs_are_not_limited():
    rl = limiter(
        {
            "base_models": {"rpm": 1},
            "exempt_orgs": ["internal"],
            "exempt_keys": ["judge-key", "sha256:" + hash_key("other-key")],
        },
        Clock(),
    )
    for _ in range(3):
        assert rl.admit(hash_key("judge-key"), "acme", BASE, 1).state.headers() == {}
        rl.admit(hash_key("other-key"), "acme", BASE, 1)
        rl.admit(hash_key("any"), "internal", BASE, 1)
    rl.admit(hash_key("user-key"), "acme", BASE, 1)
    with pytest.raises(RateLimited):
        rl.admit(hash_key("user-key"), "acme", BASE, 1)


def test_headers_follow_openai_names_and_formats():
    clock = Clock()
    rl = limiter({"base_models": {"rpm": 5, "tpm": 1000}}, clock)
    rl.admit("k", "acme", BASE, 100)
    clock.now += 45.5
    headers = rl.admit("k", "acme", BASE, 200).state.headers()
    assert headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "700",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    assert [duration(s) for s in (0.02, 1.5, 14.5, 360.0)] == ["20ms", "1.5s", "14.5s", "6m0s"]


def test_idle_windows_are_swept():
    clock = Clock()
    rl = limiter({"base_models": {"rpm": 5}}, clock)
    rl.SWEEP_EVERY = 2
    rl.admit("idle", "acme", BASE, 1)
    clock.now += 61
    rl.admit("busy", "acme", BASE, 1)
    assert set(rl._windows) == {("busy", BASE)}


def test_config_from_json_toml_and_errors_naming_the_field(tmp_path):
    inline = parse_rate_limits(json.dumps({"models": {BASE: {"rpm": 7}}}))
    assert inline.limit_for("acme", BASE).rpm == 7
    toml_file = tmp_path / "limits.toml"
    toml_file.write_text('exempt_orgs = ["internal"]\n[orgs.acme.fine_tuned_models]\nrpm = 500\n')
    assert parse_rate_limits(str(toml_file)).limit_for("acme", FT).rpm == 500
    assert parse_rate_limits("").limit_for("acme", FT).rpm == 100

    with pytest.raises(RateLimitConfigError, match=r"orgs\.acme\.models\.m\.rpm: Input should be greater"):
        parse_rate_limits('{"orgs": {"acme": {"models": {"m": {"rpm": 0}}}}}')
    with pytest.raises(RateLimitConfigError, match=r"base_models\.rps: Extra inputs"):
        parse_rate_limits('{"base_models": {"rps": 3}}')
    with pytest.raises(RateLimitConfigError, match="not valid JSON"):
        parse_rate_limits("{rpm: 3}")
    with pytest.raises(RateLimitConfigError, match="cannot read"):
        parse_rate_limits(str(tmp_path / "missing.json"))


def test_gateway_settings_fail_fast_on_bad_limits(monkeypatch):
    monkeypatch.setenv("TUNERY_GATEWAY_RATE_LIMITS", '{"fine_tuned_models": {"tpm": -1}}')
    with pytest.raises(ValidationError, match=r"fine_tuned_models\.tpm"):
        GatewaySettings()
    monkeypatch.setenv("TUNERY_GATEWAY_RATE_LIMITS", '{"fine_tuned_models": {"rpm": 5}}')
    assert GatewaySettings().rate_limits.limit_for("acme", FT).rpm == 5


def test_reservation_is_the_prompt_estimate_plus_max_tokens_per_choice():
    chat = inference_pb2.ChatCompletionRequest(model=BASE, n=2)
    chat.messages.add(role="user", content="x" * 40)
    assert prompt_estimate(chat) == 10 + 4
    assert reservation(chat, default_max_tokens=512) == 14 + 2 * 512
    chat.max_tokens = 8
    assert reservation(chat, default_max_tokens=512) == 14 + 2 * 8
    text = inference_pb2.TextCompletionRequest(model=BASE, prompt=["abcd", "abcdefgh"], max_tokens=16)
    assert reservation(text, default_max_tokens=512) == 1 + 2 + 2 * 16


async def _chunks(n_deltas: int):
    for _ in range(n_deltas):
        yield inference_pb2.CompletionChunk(delta="tok")
    yield inference_pb2.CompletionChunk(
        usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    )


async def _opened(messages):
    return messages


async def test_a_stream_cut_short_settles_with_what_was_streamed():
    rl = limiter({"base_models": {"tpm": 1000}}, Clock())
    admission = Admission(rl.admit("k", "acme", BASE, 500), prompt_tokens=20, state=State())
    stream = await admission.metered(_opened(_chunks(5)))
    async for _ in stream:
        break  # the client went away after the first delta
    await stream.aclose()
    assert admission.ticket.settled and admission.ticket.reserved == 20 + 1


async def test_a_finished_stream_settles_with_its_usage_and_a_failed_call_with_nothing():
    rl = limiter({"base_models": {"tpm": 1000}}, Clock())
    admission = Admission(rl.admit("k", "acme", BASE, 500), prompt_tokens=20, state=State())
    assert len([m async for m in await admission.metered(_opened(_chunks(3)))]) == 4
    assert admission.ticket.reserved == 10

    async def failing():
        raise RuntimeError("service down")

    failed = Admission(rl.admit("k", "acme", BASE, 500), prompt_tokens=20, state=State())
    with pytest.raises(RuntimeError):
        await failed.metered(failing())
    assert failed.ticket.reserved == 0
    assert rl.admit("k", "acme", BASE, 1).state.remaining_tokens == 1000 - 10 - 0 - 1
