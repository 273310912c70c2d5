"""Shared library pieces that need no network: API keys, ids, record helpers, settings."""

import pytest
from tunery_common.apikeys import ApiKeyError, ApiKeys, ensure_default_key, parse_api_keys
from tunery_common.records import fine_tuned_model_id, job_id_of_model
from tunery_common.settings import CommonSettings, grpc_port


def test_api_keys_map_to_orgs_and_are_stored_hashed():
    keys = ApiKeys.from_spec("k1:org1, k2:org2")
    assert keys.org_for("k1") == "org1"
    assert keys.org_for("k2") == "org2"
    assert keys.org_for("k3") is None
    assert "k1" not in parse_api_keys("k1:org1")  # only the SHA-256 digest is kept


@pytest.mark.parametrize("spec", ["nokey", ":org", "key:", "k:bad org"])
def test_malformed_api_keys_are_rejected(spec):
    with pytest.raises(ApiKeyError):
        parse_api_keys(spec)


def test_default_key_is_created_once(tmp_path):
    first = ensure_default_key(tmp_path)
    assert first.endswith(":default")
    assert ensure_default_key(tmp_path) == first
    assert (tmp_path / "api_key").stat().st_mode & 0o077 == 0


def test_fine_tuned_model_ids_follow_openai():
    assert (
        fine_tuned_model_id("tiny-random-llama", "acme", None, "ftjob-1")
        == "ft:tiny-random-llama:acme::ftjob-1"
    )
    model = fine_tuned_model_id("smollm2-135m-instruct", "acme", "tickets", "ftjob-abc")
    assert model == "ft:smollm2-135m-instruct:acme:tickets:ftjob-abc"
    assert job_id_of_model(model) == "ftjob-abc"
    assert job_id_of_model("smollm2-135m-instruct") is None


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("TUNERY_PORT", "9001")
    monkeypatch.setenv("TUNERY_TRAINER_ADDR", "127.0.0.1:6000")
    settings = CommonSettings()
    assert settings.port == 9001
    assert grpc_port(settings.trainer_addr) == 6000
    monkeypatch.setenv("TUNERY_PORT", "not-a-port")
    with pytest.raises(ValueError):
        CommonSettings()
