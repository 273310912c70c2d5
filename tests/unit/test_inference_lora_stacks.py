"""A batch whose rows use adapters of different ranks, scales and target layers: each row gets what
it gets alone (the stacked LoRA products and their per-layout masks)."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_inference_batching import GREEDY, PROMPTS, make_adapter
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.hf import HFEngine


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


def make_wide_adapter(tiny_dir: Path, out: Path) -> Path:
    """Rank 4, another scale, and layers the other adapter does not touch (and one it does)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "o_proj", "up_proj"], init_lora_weights=False
    )
    with torch.random.fork_rng():
        torch.manual_seed(9)
        get_peft_model(model, config).save_pretrained(out)
    return out


def test_rows_of_adapters_with_different_ranks_and_layers_share_a_batch(tiny_dir, tmp_path):
    engine = HFEngine(tiny_dir, device="cpu", merge_after_passes=None)
    try:
        engine.load_adapter("a", make_adapter(tiny_dir, tmp_path / "a", seed=1))
        engine.load_adapter("wide", make_wide_adapter(tiny_dir, tmp_path / "wide"))
        requests = [
            (PROMPTS[1], "a", GREEDY),
            (PROMPTS[1], "wide", GREEDY),
            (PROMPTS[1], None, GREEDY),
            (PROMPTS[4], "wide", GREEDY),
            (PROMPTS[3], "a", GREEDY),
        ]
        alone = [engine.generate(*request) for request in requests]
        assert len({c.text for c in alone[:3]}) == 3  # each adapter changes the output its own way
        with engine.model_lock:  # every request is queued before the next step: one batch
            streams = [engine.stream(*request) for request in requests]
        assert [list(stream)[-1] for stream in streams] == alone
        assert engine.peak_batch == len(requests)
    finally:
        engine.close()
