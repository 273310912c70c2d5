"""One forward pass over batch rows that may each use a different LoRA adapter (or none).

The model itself stays the base model. A forward hook on each Linear layer that a loaded adapter
targets adds the LoRA deltas of the step's rows: the A matrices of the batch's adapters are
stacked into one [Σr, in] matrix and their B·scale into one [out, Σr] matrix, so that a layer
costs two matrix products for all rows together, with a mask between them that keeps each row's
own adapter's columns (zeros for base rows). Many small products per adapter would cost more
than the arithmetic (and, with intra-op threads, wait on each other); the stacks are built once
per set of adapters in the batch, not per step, and a batch of one adapter uses its matrices as
they are, without a mask. A batch of base rows only runs the plain model (the hooks return at
once).

Cheapest of all, a lone adapter is merged into the base weights (engines.lora_merge) and no
delta is added: a forward pass costs what a base one costs. Merging touches every target layer,
so it waits until every request in sight (the batch's rows, the one being prefilled, those
waiting to join) has used that adapter alone for `merge_after_passes` forward passes in a row:
requests of two adapters that come and go together keep the hooked path instead of merging and
unmerging at every turn, and merges cost at most one per that many passes. Unmerging is free
(the original weights are swapped back) and happens before any forward pass that needs other
weights: a prefill or a step with another adapter or a base row. An adapter stays merged when
its batch ends, for the next request of it. KV caches computed under merged and hooked weights
are of the same model, so rows go on across a switch.
"""

from collections import OrderedDict

import torch

from tunery_inference.engines.lora_residency import AdapterResidency


class AdapterRouter:
    def __init__(self, adapters: AdapterResidency, merge_after_passes: int | None = None) -> None:
        """`merge_after_passes` None: never merge a lone adapter into the weights."""
        self._adapters = adapters
        self._merge = adapters.merge if merge_after_passes is not None else None
        self._merge_after_passes = merge_after_passes or 0
        self._alone: tuple[str | None, int] = (None, 0)  # the lone adapter in sight, for how many passes
        self._hooked_version: int | None = None  # the adapter set the hooks were installed for
        self._handles: list = []
        self._stacks: OrderedDict[tuple, dict] = OrderedDict()  # (version, adapters) -> stacks
        self._routing: _Routing | None = None  # the step's stacks and rows, while its forward runs

    def forward(
        self, model: torch.nn.Module, version: int, adapters: list[str | None], **inputs
    ) -> torch.Tensor:
        """The last position's logits of each row, [rows, vocabulary]. `version` changes whenever
        adapters are added to or removed from the model."""
        used = set(adapters)
        merge = self._adapters.merge
        if merge.adapter is not None and used != {merge.adapter}:
            merge.unmerge()
        if used == {None} or used == {merge.adapter}:  # the weights compute it all
            return _logits(model, inputs)
        self._install_hooks(version)
        names = tuple(sorted(name for name in used if name is not None))
        rows = None  # every row uses the one adapter: no mask
        if len(used) > 1:
            index = [names.index(name) if name is not None else -1 for name in adapters]
            rows = torch.tensor(index, device=inputs["input_ids"].device)
        self._routing = _Routing(self._stacks_for(version, names), rows)
        try:
            return _logits(model, inputs)
        finally:
            self._routing = None

    def before_forward(self, model: torch.nn.Module, version: int, in_sight: set[str | None]) -> None:
        """Called before each forward pass with the adapters of every request in sight (the
        batch's rows, the one being prefilled, those waiting): merges the lone one once it has
        been alone for `merge_after_passes` passes in a row."""
        lone = next(iter(in_sight)) if len(in_sight) == 1 else None
        if self._merge is None or lone is None:
            self._alone = (None, 0)
            return
        if self._merge.adapter == lone:
            return
        name, passes = self._alone
        passes = passes + 1 if name == lone else 1
        self._alone = (lone, passes)
        if passes >= self._merge_after_passes:
            self._merge.merge(lone, self._adapters.weights(lone))

    def _install_hooks(self, version: int) -> None:
        """Hooks on the Linear layers that any adapter on the device targets."""
        if self._hooked_version == version:
            return
        for handle in self._handles:
            handle.remove()
        targets = {path for weights in self._adapters.on_device().values() for path in weights.layers}
        linears = self._adapters.linears
        self._handles = [linears[path].register_forward_hook(self._add_deltas) for path in targets]
        self._hooked_version = version

    def _stacks_for(self, version: int, names: tuple[str, ...]) -> dict:
        """Per Linear layer that one of `names` touches: (stacked A, stacked B·scale, the adapter
        index of each stacked column). The last few sets are kept: batches change their
        adapters when requests come and go, often back to a set seen before."""
        key = (version, names)
        if key in self._stacks:
            self._stacks.move_to_end(key)
            return self._stacks[key]
        for stale in [k for k in self._stacks if k[0] != version]:  # adapters changed since
            del self._stacks[stale]
        weights = [self._adapters.weights(name) for name in names]
        paths = dict.fromkeys(path for w in weights for path in w.layers)
        stacks, column_sets = {}, {}
        for path in paths:
            present = [(i, w.layers[path]) for i, w in enumerate(weights) if path in w.layers]
            if len(present) == 1:
                a, b = present[0][1]
            else:
                a = torch.cat([a for _, (a, _) in present])
                b = torch.cat([b for _, (_, b) in present], dim=1)
            layout = tuple((i, a.shape[0]) for i, (a, _) in present)
            if layout not in column_sets:  # shared by the layers of one layout: masks are per layout
                index = [i for i, rank in layout for _ in range(rank)]
                column_sets[layout] = torch.tensor(index, device=a.device)
            stacks[self._adapters.linears[path]] = (a, b, column_sets[layout])
        self._stacks[key] = stacks
        while len(self._stacks) > _KEPT_STACKS:
            self._stacks.popitem(last=False)
        return stacks

    def _add_deltas(self, module: torch.nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        routing = self._routing
        stack = routing.stacks.get(module) if routing is not None else None
        if stack is None:
            return None
        a, b, columns = stack
        x = args[0]
        low_rank = x.reshape(-1, x.shape[-1]).to(a.dtype) @ a.T  # [rows·positions, Σr]
        if routing.rows is not None:
            masked = low_rank.view(*x.shape[:-1], -1) * routing.mask(columns, low_rank.dtype)
            low_rank = masked.view(-1, low_rank.shape[-1])
        flat = output.view(-1, output.shape[-1])
        if b.dtype == output.dtype:
            flat.addmm_(low_rank, b.T)
        else:
            flat += (low_rank @ b.T).to(output.dtype)
        return output


_KEPT_STACKS = 4


class _Routing:
    """One step's stacks and each row's adapter (an index into the step's adapters, -1: none;
    None when every row uses the one adapter)."""

    def __init__(self, stacks: dict, rows: torch.Tensor | None):
        self.stacks = stacks
        self.rows = rows
        self._masks: dict[int, torch.Tensor] = {}

    def mask(self, columns: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[rows, 1, Σr]: 1 where the column belongs to the row's adapter (made once per layout)."""
        mask = self._masks.get(id(columns))
        if mask is None:
            mask = (self.rows[:, None] == columns[None, :]).to(dtype).unsqueeze(1)
            self._masks[id(columns)] = mask
        return mask


def _logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]
