"""One forward pass over batch rows that may each use a different LoRA adapter (or none).

Rows of several adapters: the LoRA layers are switched off, so every layer computes the base
output for all rows, and a forward hook on each LoRA linear layer adds each adapter's x·A·B to
that adapter's rows (gather, two small matmuls, scatter-add). The row indices are built once per
step, not per layer: PEFT's own mixed-batch inference (`adapter_names=`) rebuilds them from a
Python list in every layer, which on CPU costs more than the matmuls. Layer kinds the hook does
not know (DoRA, embeddings, ...) fall back to PEFT's `adapter_names`.

The common cases take the plain paths: no adapter in the batch switches the LoRA layers off, one
adapter for every row makes it the active one. Those switches walk the model (PEFT's
`disable_adapter()` context even builds a status report), so they happen only when the batch's
needs change, not at every step.

Cheapest of all, a lone adapter is merged into the base weights (engines.lora_merge) and the
LoRA layers are switched off: a forward pass costs what a base one costs. Merging touches every
target layer, so it waits until every request in sight (the batch's rows, the one being
prefilled, those waiting to join) has used that adapter alone for `merge_after_passes` forward
passes in a row: requests of two adapters that come and go together keep the hooked path
instead of merging and unmerging at every turn, and merges cost at most one per that many
passes. Unmerging is free (the original weights are swapped back) and happens before any
forward pass that needs other weights: a prefill or a step with another adapter or a base row.
An adapter stays merged when its batch ends, for the next request of it. KV caches computed
under merged and hooked weights are of the same model, so rows go on across a switch.
"""

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer

from tunery_inference.engines.lora_merge import LoneAdapterMerge

BASE_ROW = "__base__"  # PEFT's name for a row without an adapter


class AdapterRouter:
    def __init__(self, merge: LoneAdapterMerge | None = None, merge_after_passes: int | None = None) -> None:
        """`merge`: the model's merge state (None, or `merge_after_passes` None: never merge)."""
        self._merge = merge if merge_after_passes is not None else None
        self._merge_after_passes = merge_after_passes or 0
        self._alone: tuple[str | None, int] = (None, 0)  # the lone adapter in sight, for how many passes
        self._unmergeable: tuple | None = None  # (model, version, adapter) found not to merge
        self._state: tuple | None = None  # (model, adapter set version, layers enabled)
        self._hooked: tuple | None = None  # (model, version) the hooks were installed for
        self._handles: list = []
        self._hooks_cover_all = False  # every LoRA layer is one the hook handles
        self._routing: list[tuple[str, torch.Tensor]] | None = None  # (adapter, its rows) this step

    def forward(
        self, model: torch.nn.Module, version: int, adapters: list[str | None], **inputs
    ) -> torch.Tensor:
        """The last position's logits of each row, [rows, vocabulary]. `version` changes whenever
        adapters are added to or removed from the model (which may reset what was switched)."""
        used = set(adapters)
        if not isinstance(model, PeftModel):
            if used != {None}:
                raise KeyError(f"adapter {next(a for a in adapters if a)!r} is not loaded")
            return _logits(model, inputs)
        merged = self._merge.merged_in(model) if self._merge else None
        if merged is not None and used != {merged}:
            self._merge.unmerge()
        elif merged is not None:
            self._enable_layers(model, version, False)  # the base weights carry the adapter
            return _logits(model, inputs)
        if len(used) == 1:
            (name,) = used
            self._enable_layers(model, version, name is not None)
            if name is not None and model.active_adapter != name:
                model.set_adapter(name)
            return _logits(model, inputs)
        self._install_hooks(model, version)
        if not self._hooks_cover_all:
            self._enable_layers(model, version, True)
            return _logits(model, {**inputs, "adapter_names": [name or BASE_ROW for name in adapters]})
        self._enable_layers(model, version, False)
        device = inputs["input_ids"].device
        self._routing = [
            (name, torch.tensor([i for i, a in enumerate(adapters) if a == name], device=device))
            for name in used
            if name is not None
        ]
        try:
            return _logits(model, inputs)
        finally:
            self._routing = None

    def before_forward(self, model: torch.nn.Module, version: int, in_sight: set[str | None]) -> None:
        """Called before each forward pass with the adapters of every request in sight (the
        batch's rows, the one being prefilled, those waiting): merges the lone one once it has
        been alone for `merge_after_passes` passes in a row."""
        lone = next(iter(in_sight)) if len(in_sight) == 1 else None
        if self._merge is None or lone is None or not isinstance(model, PeftModel):
            self._alone = (None, 0)
            return
        if self._merge.merged_in(model) == lone or self._unmergeable == (model, version, lone):
            return
        name, passes = self._alone
        passes = passes + 1 if name == lone else 1
        self._alone = (lone, passes)
        if passes >= self._merge_after_passes and not self._merge.merge(model, lone):
            self._unmergeable = (model, version, lone)

    def _enable_layers(self, model: PeftModel, version: int, enabled: bool) -> None:
        if self._state == (model, version, enabled):
            return
        if enabled:
            model.base_model.enable_adapter_layers()
        else:
            model.base_model.disable_adapter_layers()
        self._state = (model, version, enabled)

    def _install_hooks(self, model: PeftModel, version: int) -> None:
        if self._hooked == (model, version):
            return
        for handle in self._handles:
            handle.remove()
        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        self._hooks_cover_all = all(
            type(m) is LoraLinear and not any(m.use_dora.values()) and not m.lora_embedding_A for m in layers
        )
        self._handles = (
            [m.register_forward_hook(self._add_deltas) for m in layers] if self._hooks_cover_all else []
        )
        self._hooked = (model, version)

    def _add_deltas(self, module: LoraLinear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._routing is None:
            return None
        x = args[0]
        for name, rows in self._routing:
            if name not in module.lora_A:  # this adapter does not touch this layer
                continue
            delta = module.lora_B[name](module.lora_A[name](x.index_select(0, rows))) * module.scaling[name]
            output.index_add_(0, rows, delta.to(output.dtype))
        return output


def _logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]
