"""Prompt prefix caching: the KV of prefilled prompts, reused by later prompts that start alike.

Requests to a chat model mostly share a long beginning (the chat template's system prompt, an
app's fixed instructions, few-shot examples, the earlier turns of a conversation). Once a prompt
is prefilled, its keys and values are kept here, per adapter; a new prompt of the same adapter
starts from the longest prefix it shares with a kept one and prefills only the rest. At least
the prompt's last token is always fed to the model: its logits give the first generated token.

Lookups go through hashes of 16-token blocks, each chained to the block before it (so a hash
names the whole prefix up to that block), plus a hash of each whole prompt for exact repeats:
O(prompt length) per lookup however many prompts are kept. The last few matching tokens past a
block boundary are compared one by one; hash hits are checked against the ids themselves. A
prompt that shares less than one block with every kept one reuses only an exact repeat of itself.

Kept tensors are shared, never copied: a request's cache starts as views of them. That is safe
because nothing writes into cache tensors in place: transformers' DynamicLayer.update
concatenates into new tensors, and the batcher's joins and cuts make new tensors or views. Only
caches whose layers are all plain DynamicLayers are kept (a sliding-window layer drops old
positions, so its tensors are not the prompt's whole KV).

Validity: the base model's weights never change, so base entries stay. An adapter's entries are
dropped whenever the model's adapter set changes (its version: an adapter loaded, evicted or
removed), which covers an adapter removed or loaded again with other weights under its name.
KV computed with an adapter merged into the weights or through the LoRA hooks is of the same
model, so entries do not tell them apart.

Memory: entries are evicted least recently used first once their tensors pass the budget; an
entry whose prompt is the beginning of a newly kept prompt (the previous turn of a conversation)
is replaced by the new one, which holds all it held.
"""

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

BLOCK = 16  # tokens per hashed block


@dataclass(eq=False)
class _Entry:
    adapter: str | None
    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, positions, dim]
    hashes: list[int]  # where the index lists it
    nbytes: int


@dataclass(eq=False)
class PrefixMatch:
    """What a prompt reuses (`length` tokens of `entry`, 0: nothing), kept with the request until
    its prompt is prefilled and remembered in turn."""

    adapter: str | None
    prompt_ids: list[int]
    version: int  # the adapter set's version when the prompt started prefilling
    length: int = 0
    entry: _Entry | None = None
    # The prompt's keys in the index, worked out once for the lookup and for keeping it.
    block_hashes: list[int] = field(default_factory=list)
    whole_hash: int = 0


class PrefixCache:
    """Used by the decode loop's thread only; the counters may be read from anywhere."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.hits = 0  # prompts that reused a cached prefix
        self.tokens_reused = 0  # prompt tokens not prefilled thanks to it
        self.nbytes = 0  # held by the entries' tensors
        self._entries: OrderedDict[_Entry, None] = OrderedDict()  # least recently used first
        self._index: dict[int, dict[_Entry, None]] = {}  # hash -> entries, oldest first
        self._version: int | None = None

    @property
    def entries(self) -> int:
        return len(self._entries)

    def match(self, adapter: str | None, prompt_ids: list[int], version: int) -> PrefixMatch:
        """The longest cached prefix of the prompt for this adapter, at most all tokens but the last."""
        self._sync(version)
        block_hashes = _block_hashes(adapter, prompt_ids)
        whole_hash = _whole_hash(block_hashes, adapter, prompt_ids)
        found = PrefixMatch(adapter, prompt_ids, version, block_hashes=block_hashes, whole_hash=whole_hash)
        found.entry, shared = self._longest(found)
        found.length = min(shared, len(prompt_ids) - 1)
        if found.length > 0:
            self._entries.move_to_end(found.entry)
            self.hits += 1
            self.tokens_reused += found.length
        return found

    def _longest(self, found: PrefixMatch) -> tuple[_Entry | None, int]:
        """The entry sharing the longest prefix with the prompt (near enough: among entries that
        share as many whole blocks, the newest), and how many tokens it shares."""
        adapter, ids, hashes = found.adapter, found.prompt_ids, found.block_hashes
        for entry in self._index.get(found.whole_hash, ()):
            if entry.adapter == adapter and entry.ids == ids:
                return entry, len(ids)
        depth = 0
        while depth < len(hashes) and hashes[depth] in self._index:
            depth += 1
        if depth == 0:
            return None, 0
        entry = next(reversed(self._index[hashes[depth - 1]]))
        start = depth * BLOCK
        if entry.adapter != adapter or entry.ids[:start] != ids[:start]:
            return None, 0  # a hash collision
        return entry, start + _common(entry.ids, ids, start)

    def start_cache(self, found: PrefixMatch, config) -> DynamicCache:
        """A one-row cache for the prompt holding the matched prefix's KV (views of the entry's)."""
        cache = DynamicCache(config=config)
        if found.length == 0:
            return cache
        for layer, (keys, values) in zip(cache.layers, found.entry.layers, strict=True):
            keys, values = keys[:, :, : found.length], values[:, :, : found.length]
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        return cache

    def remember(self, found: PrefixMatch, cache: DynamicCache, version: int) -> None:
        """Keeps the KV of a fully prefilled prompt (`cache`, before it joins the batch)."""
        self._sync(version)
        if found.adapter is not None and found.version != version:
            return  # the adapter set changed while it prefilled: its KV may be of other weights
        if not all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers):
            return
        previous = found.entry if found.entry in self._entries else None
        if previous is not None and previous.ids == found.prompt_ids:
            self._entries.move_to_end(previous)  # a repeat: it is kept already
            return
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        nbytes = sum(t.numel() * t.element_size() for pair in layers for t in pair)
        if nbytes > self.budget_bytes:
            return
        if previous is not None and found.prompt_ids[: len(previous.ids)] == previous.ids:
            self._drop(previous)  # the new entry holds all it held
        hashes = [*found.block_hashes, found.whole_hash]
        entry = _Entry(found.adapter, found.prompt_ids, layers, hashes, nbytes)
        self._entries[entry] = None
        for h in hashes:
            self._index.setdefault(h, {})[entry] = None
        self.nbytes += nbytes
        while self.nbytes > self.budget_bytes:
            self._drop(next(iter(self._entries)))

    def _sync(self, version: int) -> None:
        """Drops the adapters' entries once the adapter set has changed."""
        if version != self._version:
            for entry in [e for e in self._entries if e.adapter is not None]:
                self._drop(entry)
            self._version = version

    def _drop(self, entry: _Entry) -> None:
        del self._entries[entry]
        self.nbytes -= entry.nbytes
        for h in entry.hashes:
            listed = self._index[h]
            del listed[entry]
            if not listed:
                del self._index[h]


def _block_hashes(adapter: str | None, ids: list[int]) -> list[int]:
    """One hash per whole block of `ids`, each naming the adapter and every token up to its end."""
    hashes, h = [], hash(("prefix", adapter))
    for start in range(0, len(ids) - BLOCK + 1, BLOCK):
        h = hash((h, *ids[start : start + BLOCK]))
        hashes.append(h)
    return hashes


def _whole_hash(block_hashes: list[int], adapter: str | None, ids: list[int]) -> int:
    tail = ids[len(block_hashes) * BLOCK :]
    return hash(("whole", block_hashes[-1] if block_hashes else hash(("prefix", adapter)), *tail))


def _common(a: list[int], b: list[int], start: int) -> int:
    """How many tokens `a` and `b` share from `start` on: less than a block, or the block after
    would have matched."""
    end = start
    while end < min(len(a), len(b)) and a[end] == b[end]:
        end += 1
    return end - start
