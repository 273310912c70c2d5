"""Real LoRA adapters on the tiny model, published to the model registry the way the trainer does."""

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM
from tunery_common.adapters import adapter_object_name, pack_adapter
from tunery_common.bus import Bus
from tunery_common.records import ModelRecord, checkpoint_model_id, fine_tuned_model_id

BASE = "tiny-random-llama"
# A fixed prompt for logit comparisons.
INPUT_IDS = torch.tensor([[1, 42, 7, 1024, 99, 5, 300, 2]])


def make_lora(base_dir: Path, out: Path, seed: int) -> Path:
    """A PEFT folder (save_pretrained, as the trainer writes it) with random non-zero B matrices,
    so that each seed gives an adapter that changes the model's outputs differently."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        get_peft_model(model, config).save_pretrained(out)
    return out


def peft_logits(base_dir: Path, adapter_dir: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.inference_mode():
        return PeftModel.from_pretrained(model, adapter_dir).eval()(INPUT_IDS).logits


async def publish(
    bus: Bus, org: str, job_id: str, adapter_dir: Path, step: int | None = None, suffix: str = "sfx"
) -> tuple[ModelRecord, int]:
    """Stores the adapter and registers the model (or the checkpoint at `step`); returns the
    record and its KV revision."""
    model_id = fine_tuned_model_id(BASE, org, suffix, job_id)
    record = ModelRecord(
        id=model_id if step is None else checkpoint_model_id(model_id, step),
        org=org,
        parent=BASE,
        job_id=job_id,
        checkpoint_step=step,
        adapter_object="",
    )
    record.adapter_object = adapter_object_name(org, record.key_id)
    await bus.put_object(record.adapter_object, pack_adapter(adapter_dir))
    revision = await bus.models.put(org, record.key_id, record)
    return record, revision
