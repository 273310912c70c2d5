"""Adapter settings checked against the model's architecture before any weight is loaded."""

import pytest
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.hyperparams import DpoHyperparameters, Hyperparameters, resolve
from tunery_trainer.model_setup import ConfigError, check_adapter_config

TARGETS = "method.supervised.hyperparameters.lora.target_modules"


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return ensure_base_model("tiny-random-llama", model_cache)


def hp(**lora) -> Hyperparameters:
    return Hyperparameters(lora=lora)


def test_the_default_adapter_fits(model_dir):
    check_adapter_config(model_dir, Hyperparameters(), max_lora_rank=64)
    check_adapter_config(model_dir, resolve(Hyperparameters(), 10), max_lora_rank=64)
    check_adapter_config(model_dir, hp(target_modules=["q_proj", "layers.1.mlp.down_proj"]), 64)


def test_a_rank_above_the_serving_limit_is_refused(model_dir):
    with pytest.raises(ConfigError) as info:
        check_adapter_config(model_dir, hp(r=128), max_lora_rank=64)

    assert info.value.param == "method.supervised.hyperparameters.lora.r"
    assert "128" in info.value.message and "64" in info.value.message


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("qkv_proj", "not a module of this model; its linear layers are down_proj, gate_proj, k_proj"),
        ("self_attn", "'model.layers.0.self_attn' (LlamaAttention), not a linear layer"),
        ("embed_tokens", "(Embedding), not a linear layer"),
        ("input_layernorm", "(LlamaRMSNorm), not a linear layer"),
        ("lm_head", "is the output layer"),
    ],
)
def test_target_modules_must_be_linear_layers_of_the_decoder(model_dir, target, says):
    with pytest.raises(ConfigError) as info:
        check_adapter_config(model_dir, hp(target_modules=["q_proj", target]), max_lora_rank=64)

    assert info.value.param == TARGETS
    assert says in info.value.message and repr(target) in info.value.message


def test_the_param_path_names_the_job_method(model_dir):
    with pytest.raises(ConfigError) as info:
        check_adapter_config(model_dir, DpoHyperparameters(lora={"target_modules": ["nope"]}), 64)

    assert info.value.param == "method.dpo.hyperparameters.lora.target_modules"
