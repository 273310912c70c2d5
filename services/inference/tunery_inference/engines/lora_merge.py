"""One adapter merged into the base weights while it is the only one in use, and taken out exactly.

A batch whose rows all use one adapter can run at the base model's cost: each targeted Linear
layer computes with W + B·scale·A and no LoRA product is added. The merged weights go into
buffers of their own, swapped in for the original parameters, which are never written: unmerging
swaps the originals back, so the base weights stay bit for bit what they were however many
merges come and go (adding then subtracting the delta in place would drift by rounding), and it
costs no arithmetic. Merging costs one fused W + B·scale·A per layer into the buffers, which are
kept for the next merge (fresh allocations of that size cost more than the arithmetic). The
price is memory: once an adapter has been merged, its target layers' weights exist twice, until
the model's last adapter is removed.
"""

import logging

import torch

from tunery_inference.engines.lora_weights import LoraWeights

log = logging.getLogger(__name__)


class LoneAdapterMerge:
    """Which adapter the base weights carry, if any. Callers hold the model lock."""

    def __init__(self, linears: dict[str, torch.nn.Linear]) -> None:
        """`linears`: the model's Linear layers by module path (lora_weights.linear_layers)."""
        self.adapter: str | None = None
        self.merges = 0  # how many merges so far, for monitoring
        self._linears = linears
        self._originals: list[tuple[torch.nn.Linear, torch.nn.Parameter]] = []  # swapped out
        self._buffers: dict[torch.nn.Linear, torch.nn.Parameter] = {}  # merged weights, reused

    def merge(self, name: str, weights: LoraWeights) -> None:
        """Merges the adapter `name` (unmerging any other first)."""
        if self.adapter == name:
            return
        self.unmerge()
        with torch.no_grad():
            for path, (a, b) in weights.layers.items():
                layer = self._linears[path]
                original = layer.weight
                merged = self._buffers.get(layer)
                if merged is None or not _same_kind(merged, original):
                    merged = torch.nn.Parameter(torch.empty_like(original), requires_grad=False)
                    self._buffers[layer] = merged
                _merge_into(merged.data, original, a, b)
                layer.weight = merged
                self._originals.append((layer, original))
        self.adapter = name
        self.merges += 1
        log.debug("adapter %s merged into %d layers", name, len(weights.layers))

    def unmerge(self) -> None:
        """Puts the original weights back (the very parameters that were there)."""
        for layer, original in self._originals:
            layer.weight = original
        if self.adapter is not None:
            log.debug("adapter %s unmerged", self.adapter)
        self._originals, self.adapter = [], None

    def release(self) -> None:
        """Unmerges and frees the buffers (the model has no adapter left to merge)."""
        self.unmerge()
        self._buffers.clear()


def _same_kind(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)


def _merge_into(out: torch.Tensor, weight: torch.Tensor, a: torch.Tensor, b_scaled: torch.Tensor) -> None:
    """out = weight + (B·scale)·A, shaped like the weight [out, in]."""
    if a.dtype == weight.dtype:
        torch.addmm(weight, b_scaled, a, out=out)
    else:  # an adapter kept in float32 beside half-precision weights: add in float32, round once
        out.copy_(torch.addmm(weight.float(), b_scaled.float(), a.float()))
