"""One forward pass over batch rows that may each use a different LoRA adapter (or none).

Rows of several adapters: the LoRA layers are switched off, so every layer computes the base
output for all rows, and a forward hook on each LoRA linear layer adds the adapters' deltas: the
A matrices of the batch's adapters are stacked into one [Σr, in] matrix and their B·scale into
one [out, Σr] matrix, so that a layer costs two matrix products for all rows together, with a
mask between them that keeps each row's own adapter's columns (zeros for base rows). Many small
products per adapter would cost more than the arithmetic (and, with intra-op threads, wait on
each other); the stacks are built once per set of adapters in the batch, not per step. PEFT's
own mixed-batch inference (`adapter_names=`) loops over adapters and rebuilds row indices from a
Python list in every layer; it remains the fallback for layer kinds the hook does not know (DoRA,
LoRA bias, embeddings, ...).

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

from collections import OrderedDict

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
        self._stacks: OrderedDict[tuple, dict] = OrderedDict()  # (model, version, adapters) -> stacks
        self._routing: _Routing | None = None  # the step's stacks and rows, while its forward runs

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
        names = tuple(sorted(name for name in used if name is not None))
        rows = [names.index(name) if name is not None else -1 for name in adapters]
        self._routing = _Routing(
            self._stacks_for(model, version, names), torch.tensor(rows, device=inputs["input_ids"].device)
        )
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
            type(m) is LoraLinear
            and not any(m.use_dora.values())
            and not any(m.lora_bias.values())
            and not m.lora_variant
            and not m.lora_embedding_A
            for m in layers
        )
        self._handles = (
            [m.register_forward_hook(self._add_deltas) for m in layers] if self._hooks_cover_all else []
        )
        self._hooked = (model, version)

    def _stacks_for(self, model: PeftModel, version: int, names: tuple[str, ...]) -> dict:
        """Per LoRA layer that one of `names` touches: (stacked A, stacked B·scale, the adapter
        index of each stacked column). The last few sets are kept: batches change their
        adapters when requests come and go, often back to a set seen before."""
        key = (model, version, names)
        if key in self._stacks:
            self._stacks.move_to_end(key)
            return self._stacks[key]
        for stale in [k for k in self._stacks if k[:2] != (model, version)]:  # adapters changed since
            del self._stacks[stale]
        stacks, column_sets = {}, {}
        for module in model.modules():
            if not isinstance(module, LoraLinear):
                continue
            present = [name for name in names if name in module.lora_A]
            if not present:
                continue
            a = torch.cat([module.lora_A[name].weight for name in present])
            b = torch.cat([module.lora_B[name].weight * module.scaling[name] for name in present], dim=1)
            layout = tuple((names.index(name), module.r[name]) for name in present)
            if layout not in column_sets:  # shared by the layers of one layout: masks are per layout
                index = [i for i, r in layout for _ in range(r)]
                column_sets[layout] = torch.tensor(index, device=a.device)
            stacks[module] = (a, b, column_sets[layout])
        self._stacks[key] = stacks
        while len(self._stacks) > _KEPT_STACKS:
            self._stacks.popitem(last=False)
        return stacks

    def _add_deltas(self, module: LoraLinear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        routing = self._routing
        if routing is None or module not in routing.stacks:
            return None
        a, b, columns = routing.stacks[module]
        x = args[0]
        low_rank = x.reshape(-1, x.shape[-1]).to(a.dtype) @ a.T  # [rows·positions, Σr]
        low_rank = low_rank.view(*x.shape[:-1], -1) * routing.mask(columns, low_rank.dtype)
        delta = low_rank.view(-1, low_rank.shape[-1]) @ b.T
        output += delta.view(output.shape).to(output.dtype)
        return output


_KEPT_STACKS = 2


class _Routing:
    """One step's stacks and each row's adapter (an index into the step's adapters, -1: none)."""

    def __init__(self, stacks: dict, rows: torch.Tensor):
        self.stacks = stacks
        self._rows = rows
        self._masks: dict[int, torch.Tensor] = {}

    def mask(self, columns: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[rows, 1, Σr]: 1 where the column belongs to the row's adapter (made once per layout)."""
        mask = self._masks.get(id(columns))
        if mask is None:
            mask = (self._rows[:, None] == columns[None, :]).to(dtype).unsqueeze(1)
            self._masks[id(columns)] = mask
        return mask


def _logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]
