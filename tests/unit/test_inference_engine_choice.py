"""TUNERY_INFERENCE_ENGINE: which engine the pool builds, and a clear refusal of one that is not
installed (at start-up, not at the first request)."""

import pytest
import torch
from tunery_inference.engine_pool import EnginePool, choose_engine, vllm_installed
from tunery_inference.settings import InferenceSettings


def test_the_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("TUNERY_INFERENCE_ENGINE", "hf")
    assert InferenceSettings().engine == "hf"
    monkeypatch.setenv("TUNERY_INFERENCE_ENGINE", "tgi")
    with pytest.raises(ValueError, match="engine"):
        InferenceSettings()


def test_auto_is_vllm_on_a_gpu_and_transformers_without_one():
    expected = "vllm" if torch.cuda.is_available() and vllm_installed() else "hf"
    assert choose_engine("auto") == expected
    assert choose_engine("hf") == "hf"


def test_vllm_is_chosen_where_installed_and_refused_where_not(tmp_path):
    settings = InferenceSettings(engine="vllm")
    if vllm_installed():
        assert EnginePool(tmp_path, settings).engine == "vllm"
        return
    with pytest.raises(RuntimeError, match="vllm is not installed"):
        EnginePool(tmp_path, settings)
