"""The model a run trains: base weights (optionally 4-bit), the LoRA adapter, memory savers.

`check_adapter_config` validates an adapter configuration against the model's architecture
before any weight is loaded, so a bad job fails at once with the parameter to fix.
"""

import importlib.util
from pathlib import Path
from typing import Any

import torch

from tunery_trainer.data import method_of


class ConfigError(ValueError):
    """A hyperparameter the model or the serving engine cannot take; `param` is its path in the job."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message = message
        self.param = param


def training_device(name: str | None = None) -> torch.device:
    """The named device, or the first GPU if there is one, else the CPU."""
    if name is not None:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware computes in it natively, fp32 elsewhere (CPUs, older GPUs)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:  # Ampere and later
        return torch.bfloat16
    return torch.float32


def check_adapter_config(model_dir: Path, hp: Any, max_lora_rank: int) -> None:
    """Raise ConfigError unless the LoRA settings fit this model and the serving engine.

    `hp` is a `Hyperparameters` model or `ResolvedHyperparameters`. The model is built on the
    meta device (no weights read): every target module must exist and be a linear layer of the
    decoder; the output layer and embeddings are refused (adapting them would need
    modules_to_save-style full copies that the serving engine does not load).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    r, target_modules = _lora_settings(hp)
    param = f"method.{method_of(hp)}.hyperparameters"
    if r > max_lora_rank:
        raise ConfigError(
            f"lora.r={r} is above the serving engine's maximum LoRA rank {max_lora_rank}", f"{param}.lora.r"
        )
    if getattr(hp, "quantization", "none") == "4bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantization '4bit' needs the bitsandbytes package", f"{param}.quantization")

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    modules = dict(model.named_modules())
    output_layer = model.get_output_embeddings()
    where = f"{param}.lora.target_modules"
    for target in target_modules:
        matched = [name for name in modules if name == target or name.endswith(f".{target}")]
        if not matched:
            raise ConfigError(
                f"lora.target_modules: {target!r} is not a module of this model; "
                f"its linear layers are {', '.join(_linear_names(model))}",
                where,
            )
        for name in matched:
            module = modules[name]
            if module is output_layer:
                raise ConfigError(
                    f"lora.target_modules: {target!r} is the output layer; adapters may target the "
                    "attention and MLP linear layers only",
                    where,
                )
            if not isinstance(module, torch.nn.Linear):
                raise ConfigError(
                    f"lora.target_modules: {target!r} matches {name!r} ({type(module).__name__}), "
                    "not a linear layer",
                    where,
                )


def load_model_for_training(model_dir: Path, hp: Any, device: torch.device) -> torch.nn.Module:
    """The base model with a fresh LoRA adapter, ready to train on `device`.

    The adapter's initial weights come from torch's global generator: seed it first.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype(device)
    checkpointing = {"use_reentrant": False}  # the reentrant variant drops gradients of frozen inputs
    if hp.quantization == "4bit":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, quantization_config=quantization, device_map={"": str(device)}
        )
        # Norms and embeddings to fp32, input gradients on: what LoRA over frozen 4-bit needs.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=hp.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
        if hp.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
            model.enable_input_require_grads()
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=list(hp.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    return model


def _lora_settings(hp: Any) -> tuple[int, list[str]]:
    lora = getattr(hp, "lora", None)
    if lora is not None:  # the job's hyperparameters object
        return lora.r, list(lora.target_modules)
    return hp.lora_r, list(hp.target_modules)


def _linear_names(model: torch.nn.Module) -> list[str]:
    output_layer = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output_layer
    }
    return sorted(names)
