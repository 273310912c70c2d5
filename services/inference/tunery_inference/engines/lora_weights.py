"""A LoRA adapter folder (as PEFT saves it) read into what the engine applies: per target Linear
layer, A [r, in] and B·scale [out, r].

The engine applies adapters itself (engines.lora_batch) instead of injecting PEFT's LoRA layers
into the model: adding, activating and deleting PEFT adapters walks the whole module tree several
times (about a second per adapter on a 135M model, growing with every adapter loaded), which
would make hot-loading slow and switching adapters between batches costly. Reading an adapter is
a safetensors load and a key lookup. The forward pass is PEFT's LoRA: y = W·x + scale·B·(A·x).

Only plain LoRA on Linear layers is served, which is what the trainer writes: an adapter with
DoRA, LoRA biases, `modules_to_save`, embedding or other targets, or per-layer alpha patterns
is refused with the reason.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import load_peft_weights

_PREFIX = "base_model.model."
# Config fields that change what a LoRA layer computes; each must be unset for a plain adapter.
_UNSUPPORTED = (
    "use_dora",
    "lora_bias",
    "modules_to_save",
    "trainable_token_indices",
    "fan_in_fan_out",
    "alpha_pattern",
    "layer_replication",
    "target_parameters",
    "alora_invocation_tokens",
    "arrow_config",
    "use_bdlora",
    "use_qalora",
    "kasa_config",
    "monteclora_config",
    "velora_config",
    "megatron_config",
)


class UnsupportedAdapter(ValueError):
    """The folder is not a plain LoRA adapter of this model; the message says what is wrong."""


@dataclass(frozen=True)
class LoraWeights:
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module path -> (A, B·scale)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.layers.values())

    def to(self, device: torch.device | str) -> "LoraWeights":
        return LoraWeights({path: (a.to(device), b.to(device)) for path, (a, b) in self.layers.items()})


def read_lora(folder: Path, linears: dict[str, torch.nn.Linear]) -> LoraWeights:
    """The adapter in `folder`, checked against the model's Linear layers (module path -> layer).
    OSError if the folder or its files are missing; UnsupportedAdapter for anything else wrong."""
    config_file = Path(folder) / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise UnsupportedAdapter(f"{config_file}: not valid JSON ({exc})") from None
    _check_config(config, config_file)
    tensors = load_peft_weights(str(folder), device="cpu")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        path, _, kind = key.removeprefix(_PREFIX).removesuffix(".weight").rpartition(".")
        if not key.startswith(_PREFIX) or not key.endswith(".weight") or kind not in ("lora_A", "lora_B"):
            raise UnsupportedAdapter(f"{folder}: tensor {key!r} is not a LoRA A/B weight of a Linear layer")
        pairs.setdefault(path, {})[kind] = tensor
    if not pairs:
        raise UnsupportedAdapter(f"{folder}: the adapter has no LoRA weights")
    alpha = float(config.get("lora_alpha", 8))
    layers = {}
    for path, pair in pairs.items():
        layer = linears.get(path)
        if layer is None:
            raise UnsupportedAdapter(f"{folder}: {path!r} is not a Linear layer of this base model")
        a, b = pair.get("lora_A"), pair.get("lora_B")
        if a is None or b is None:
            raise UnsupportedAdapter(f"{folder}: {path!r} has only one of lora_A and lora_B")
        rank = a.shape[0]  # per layer, which also covers a rank_pattern
        if a.shape != (rank, layer.in_features) or b.shape != (layer.out_features, rank):
            raise UnsupportedAdapter(
                f"{folder}: {path!r} has LoRA shapes {tuple(a.shape)} and {tuple(b.shape)}; the layer is "
                f"{layer.in_features} -> {layer.out_features} (an adapter of another base model?)"
            )
        scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        layers[path] = (a.contiguous(), (b * scale).contiguous())
    return LoraWeights(layers)


def linear_layers(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The model's Linear layers by module path, as adapter keys name them."""
    return {path: m for path, m in model.named_modules() if type(m) is torch.nn.Linear}


def _check_config(config: dict, config_file: Path) -> None:
    if config.get("peft_type") != "LORA":
        kind = config.get("peft_type")
        raise UnsupportedAdapter(f"{config_file}: peft_type is {kind!r}; only LORA is served")
    if config.get("bias", "none") != "none":
        raise UnsupportedAdapter(f"{config_file}: bias={config['bias']!r}; only bias='none' is served")
    for field in _UNSUPPORTED:
        if config.get(field):
            raise UnsupportedAdapter(f"{config_file}: {field} is set; only plain LoRA adapters are served")
