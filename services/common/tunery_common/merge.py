"""Merging a LoRA adapter into its base model: a plain Hugging Face folder that loads without PEFT.

torch, transformers and peft are imported inside: the gateway and a light CLI install import
this package without them.
"""

import json
from pathlib import Path

from tunery_common.adapters import ADAPTER_CONFIG
from tunery_common.basemodels import ensure_base_model, spec_of


def adapter_base_model(adapter_dir: Path) -> str:
    """The Tunery base model an exported adapter was trained on (checked against the catalog)."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path") or ""
    spec_of(base)  # UnknownModelError names the known ones
    return base


def merge_adapter(adapter_dir: Path, model_cache: Path, out_dir: Path) -> str:
    """Writes base + adapter, merged, to `out_dir` (config, safetensors, tokenizer, generation
    config); returns the base model id."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_id = adapter_base_model(adapter_dir)
    base_dir = ensure_base_model(base_id, model_cache)
    # Merged in float32 (W + BA loses little there), stored in the base model's own dtype.
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    stored_dtype = _stored_dtype(base_dir)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    if stored_dtype is not None:
        merged = merged.to(stored_dtype)
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return base_id


def _stored_dtype(model_dir: Path):
    import torch

    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) else None
