"""One adapter merged into the base weights while it is the only one in use, and taken out exactly.

A batch whose rows all use one adapter can run at the base model's cost: each targeted Linear
layer computes with W + scale·B·A and the LoRA layers are bypassed. The merged weights go into
buffers of their own, swapped in for the original parameters, which are never written: unmerging
swaps the originals back, so the base weights stay bit for bit what they were however many
merges come and go (adding then subtracting the delta in place would drift by rounding), and it
costs no arithmetic. Merging costs one fused W + scale·B·A per layer into the buffers, which are
kept for the next merge (fresh allocations of that size cost more than the arithmetic). The
price is memory: once an adapter has been merged, its target layers' weights exist twice, until
the model's last adapter is removed.

Only plain LoRA on Linear layers merges (no DoRA or other variants, no LoRA bias, no
`modules_to_save` or trainable tokens, which bypassing the LoRA layers would switch off too);
other adapters keep the hooked path.
"""

import logging

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer

log = logging.getLogger(__name__)


class LoneAdapterMerge:
    """Which adapter the base weights of which model carry, if any. Callers hold the model lock."""

    def __init__(self) -> None:
        self.adapter: str | None = None
        self.merges = 0  # how many merges so far, for monitoring
        self._model: torch.nn.Module | None = None
        self._originals: list[tuple[torch.nn.Linear, torch.nn.Parameter]] = []  # swapped out
        self._buffers: dict[torch.nn.Linear, torch.nn.Parameter] = {}  # merged weights, reused

    def merged_in(self, model: torch.nn.Module) -> str | None:
        """The adapter merged into this model's weights, or None."""
        return self.adapter if model is self._model else None

    def merge(self, model: PeftModel, name: str) -> bool:
        """Merges `name` (unmerging any other first); False, with nothing changed, for an adapter
        that cannot merge. The caller then bypasses the LoRA layers for the forward passes."""
        if self.merged_in(model) == name:
            return True
        layers = _mergeable_layers(model, name)
        if layers is None:
            return False
        self.unmerge()
        with torch.no_grad():
            for layer in layers:
                base = layer.get_base_layer()
                original = base.weight
                merged = self._buffers.get(base)
                if merged is None or not _same_kind(merged, original):
                    merged = torch.nn.Parameter(torch.empty_like(original), requires_grad=False)
                    self._buffers[base] = merged
                _merge_into(merged.data, original, layer, name)
                base.weight = merged
                self._originals.append((base, original))
        self._model, self.adapter = model, name
        self.merges += 1
        log.debug("adapter %s merged into %d layers", name, len(layers))
        return True

    def unmerge(self) -> None:
        """Puts the original weights back (the very parameters that were there)."""
        for base, original in self._originals:
            base.weight = original
        if self.adapter is not None:
            log.debug("adapter %s unmerged", self.adapter)
        self._originals, self._model, self.adapter = [], None, None

    def release(self) -> None:
        """Unmerges and frees the buffers (the model has no adapter left to merge)."""
        self.unmerge()
        self._buffers.clear()


def _mergeable_layers(model: PeftModel, name: str) -> list[LoraLinear] | None:
    """The layers that carry the adapter, or None if any of them (or the adapter) cannot merge."""
    config = model.peft_config.get(name)
    if config is None or config.modules_to_save or getattr(config, "trainable_token_indices", None):
        return None
    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if name in module.lora_embedding_A:
            return None
        if name not in module.lora_A:
            continue
        plain = (
            type(module) is LoraLinear
            and type(module.get_base_layer()) is torch.nn.Linear
            and name not in module.lora_variant
            and not module.use_dora.get(name, False)
            and not module.lora_bias.get(name, False)
        )
        if not plain:
            return None
        layers.append(module)
    return layers


def _same_kind(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)


def _merge_into(out: torch.Tensor, weight: torch.Tensor, layer: LoraLinear, name: str) -> None:
    """out = weight + scale·B·A, shaped like the weight."""
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    left, right = (a.T, b.T) if layer.fan_in_fan_out else (b, a)  # fan_in_fan_out: W is [in, out]
    scale = layer.scaling[name]
    if left.dtype == weight.dtype:
        torch.addmm(weight, left, right, alpha=scale, out=out)
    else:  # an adapter kept in float32 beside half-precision weights: add in float32, round once
        out.copy_(torch.addmm(weight.float(), left.float(), right.float(), alpha=scale))
