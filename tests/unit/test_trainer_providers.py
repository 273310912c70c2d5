"""Managed-provider configuration: the TOML file, the JSON variable, and start-up failures."""

import json

import pytest
from tunery_common.basemodels import CATALOG
from tunery_trainer.providers import ProviderConfigError, ProviderSettings, load_providers

TOML = """
[[providers]]
name = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "TEST_PROVIDER_KEY"
poll_interval_s = 30
[providers.models]
"gpt-4o-mini" = "gpt-4o-mini-2024-07-18"
"gpt-4.1-nano" = "gpt-4.1-nano-2025-04-14"

[[providers]]
name = "other-tunery"
base_url = "http://10.0.0.7:8000/v1"
api_key = "key-b"
models = { "remote-tiny" = "tiny-random-llama" }
"""


def from_file(tmp_path, text: str):
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return load_providers(ProviderSettings(providers_file=path, providers=None))


def from_json(value) -> object:
    text = value if isinstance(value, str) else json.dumps(value)
    return load_providers(ProviderSettings(providers_file=None, providers=text))


def provider(**overrides) -> dict:
    return {
        "name": "p",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key": "k",
        "models": {"m": "r"},
        **overrides,
    }


def test_toml_file_maps_local_models_to_providers(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PROVIDER_KEY", "sk-from-env")

    catalog = from_file(tmp_path, TOML)

    openai_provider = catalog.provider_for("gpt-4o-mini")
    assert openai_provider.name == "openai"
    assert openai_provider.base_url == "https://api.openai.com/v1"  # trailing slash dropped
    assert openai_provider.api_key.get_secret_value() == "sk-from-env"
    assert openai_provider.remote_model("gpt-4.1-nano") == "gpt-4.1-nano-2025-04-14"
    assert openai_provider.poll_interval_s == 30
    other = catalog.provider_for("remote-tiny")
    assert other.name == "other-tunery" and other.api_key.get_secret_value() == "key-b"
    assert other.poll_interval_s == 10 and other.retry_for_s == 300  # defaults
    assert catalog.provider_for("tiny-random-llama") is None
    assert catalog.model_names == ["gpt-4.1-nano", "gpt-4o-mini", "remote-tiny"]
    assert "sk-from-env" not in repr(openai_provider)  # the key stays out of logs


def test_json_variable_takes_a_bare_list_or_an_object():
    bare = from_json([provider(models={"a": "b"})])
    wrapped = from_json({"providers": [provider(models={"a": "b"})]})

    assert bare.provider_for("a").remote_model("a") == "b"
    assert wrapped.provider_for("a").remote_model("a") == "b"


def test_no_configuration_means_no_providers():
    catalog = load_providers(ProviderSettings(providers_file=None, providers=None))

    assert catalog.providers == [] and catalog.provider_for("gpt-4o-mini") is None


def test_settings_come_from_the_trainer_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_TRAINER_PROVIDERS", json.dumps([provider(models={"x": "y"})]))
    monkeypatch.delenv("TUNERY_TRAINER_PROVIDERS_FILE", raising=False)

    assert load_providers().provider_for("x").name == "p"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([provider(models={"tiny-random-llama": "r"})], "'tiny-random-llama' is a local base model"),
        ([provider(), provider(name="q", models={"m": "s"})], "'m' is offered by providers 'p' and 'q'"),
        ([provider(), provider(models={"n": "s"})], "provider name 'p' is used twice"),
        ([provider(api_key=None)], "providers[0]: give exactly one of api_key and api_key_env"),
        ([provider(api_key_env="X")], "providers[0]: give exactly one of api_key and api_key_env"),
        (
            [provider(api_key=None, api_key_env="TUNERY_TEST_UNSET_KEY")],
            "environment variable TUNERY_TEST_UNSET_KEY (api_key_env) is not set",
        ),
        ([provider(base_url="api.example.com")], "providers[0].base_url: String should match pattern"),
        ([provider(models={})], "providers[0].models: Dictionary should have at least 1 item"),
        ([provider(name="Bad Name")], "providers[0].name: String should match pattern"),
        ([provider(poll_interval_s=0)], "providers[0].poll_interval_s: Input should be greater than 0"),
        ([provider(region="eu")], "providers[0].region: Extra inputs are not permitted"),
        ({"providers": [], "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_configuration_fails_naming_the_field(config, expected):
    with pytest.raises(ProviderConfigError) as raised:
        from_json(config)

    assert str(raised.value).startswith("TUNERY_TRAINER_PROVIDERS: ")
    assert expected in str(raised.value)


def test_every_catalog_model_is_refused_as_a_local_name():
    for base in CATALOG:
        with pytest.raises(ProviderConfigError, match="is a local base model"):
            from_json([provider(models={base: "remote"})])


def test_malformed_json_names_line_and_column():
    with pytest.raises(ProviderConfigError, match=r"not valid JSON at line 2 column 1"):
        from_json('[{"name": "p",\n}]')


def test_malformed_toml_names_the_file_and_line(tmp_path):
    with pytest.raises(ProviderConfigError) as raised:
        from_file(tmp_path, '[[providers]]\nname = "p\n')

    message = str(raised.value)
    assert str(tmp_path / "providers.toml") in message and "not valid TOML" in message
    assert "line 2" in message


def test_toml_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(ProviderConfigError) as raised:
        from_file(tmp_path, '[[providers]]\nname = "p"\nbase_url = "http://x/v1"\napi_key = "k"\n')

    assert str(raised.value) == (
        f"TUNERY_TRAINER_PROVIDERS_FILE={tmp_path / 'providers.toml'}: providers[0].models: Field required"
    )


def test_missing_file_and_both_sources_are_refused(tmp_path):
    with pytest.raises(ProviderConfigError, match="cannot read the file"):
        load_providers(ProviderSettings(providers_file=tmp_path / "absent.toml", providers=None))
    with pytest.raises(ProviderConfigError, match="not both"):
        load_providers(ProviderSettings(providers_file=tmp_path / "absent.toml", providers="[]"))
