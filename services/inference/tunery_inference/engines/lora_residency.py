"""Which LoRA adapters are loaded, in two tiers with least-recently-used eviction.

- on the model's device: weights a batch row can use (at most `max_loras`);
- in host memory: the adapter read from disk (at most `max_cpu_loras`), so that bringing an
  evicted adapter back to the device costs no disk read (on a CPU-only machine both tiers are
  the same memory and only the count differs).

Every adapter ever loaded keeps its folder, so a request for an evicted one loads it again on
demand. An adapter in use by a running sequence is pinned and never evicted; when more adapters
are in use at once than `max_loras`, the device holds more for a while rather than refusing.
"""

import logging
import threading
from collections import Counter, OrderedDict
from pathlib import Path

import torch

from tunery_inference.engines.lora_merge import LoneAdapterMerge
from tunery_inference.engines.lora_weights import LoraWeights, linear_layers, read_lora

log = logging.getLogger(__name__)


class AdapterResidency:
    """Owns the model's adapter set. `model_lock` guards the model: adapters change between
    decoding steps, never during one. It is re-entrant: the decode loop releases adapters
    (which may evict) while it holds the model."""

    def __init__(
        self, model: torch.nn.Module, model_lock: threading.RLock, max_loras: int, max_cpu_loras: int
    ):
        self.model = model  # never changed: adapters are applied around its Linear layers
        self.linears = linear_layers(model)
        self._device = next(model.parameters()).device
        self._model_lock = model_lock
        self._max_loras = max_loras
        self._max_cpu_loras = max(max_cpu_loras, max_loras)
        self._folders: dict[str, Path] = {}
        self._host: OrderedDict[str, LoraWeights] = OrderedDict()
        self._on_device: OrderedDict[str, LoraWeights] = OrderedDict()
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()  # the bookkeeping above
        self.merge = LoneAdapterMerge(self.linears)  # the adapter the base weights carry, if any
        self.version = 0  # changes with every adapter added to or removed from the device

    def register(self, name: str, folder: Path) -> None:
        """Remember where an adapter lives, without loading it."""
        with self._lock:
            self._folders[name] = folder

    def known(self, name: str) -> bool:
        with self._lock:
            return name in self._folders

    def in_model(self, name: str) -> bool:
        """Whether the adapter is on the device, usable by a batch without loading."""
        with self._lock:
            return name in self._on_device

    def weights(self, name: str) -> LoraWeights:
        """The device weights of an adapter that is in the model (a pinned one stays there)."""
        with self._lock:
            return self._on_device[name]

    def on_device(self) -> dict[str, LoraWeights]:
        with self._lock:
            return dict(self._on_device)

    def acquire(self, name: str) -> None:
        """Makes the adapter usable by the model and pins it until `release`. KeyError for a
        name that was never registered (or was forgotten); OSError or UnsupportedAdapter (a
        ValueError) if its folder cannot be read as an adapter of this model."""
        with self._lock:
            if name not in self._folders:
                raise KeyError(f"adapter {name!r} is not loaded")
            self._pins[name] += 1
            if name in self._on_device:
                self._on_device.move_to_end(name)
                return
        try:
            self._bring_in(name)
        except BaseException:
            self.release(name)
            raise

    def release(self, name: str) -> None:
        with self._lock:
            self._pins[name] -= 1
            if self._pins[name] <= 0:
                del self._pins[name]
        self._evict_beyond_limit()

    def forget(self, name: str) -> None:
        """Drops the adapter from every tier (from the device once no running sequence uses it:
        new requests are refused at once); KeyError if it is not known."""
        with self._lock:
            if name not in self._folders:
                raise KeyError(f"adapter {name!r} is not loaded")
            del self._folders[name]
            self._host.pop(name, None)
        self._evict_beyond_limit()

    def _bring_in(self, name: str) -> None:
        host = self._host_copy(name)
        on_device = host.to(self._device)  # before taking the model: the batch goes on meanwhile
        with self._model_lock, self._lock:
            if name not in self._on_device:
                self._on_device[name] = on_device
                self.version += 1
                log.info("adapter %s loaded into the model", name)
            self._on_device.move_to_end(name)
        self._evict_beyond_limit()

    def _host_copy(self, name: str) -> LoraWeights:
        with self._lock:
            if name in self._host:
                self._host.move_to_end(name)
                return self._host[name]
            folder = self._folders[name]
        host = read_lora(folder, self.linears)
        with self._lock:
            self._host[name] = host
            while len(self._host) > self._max_cpu_loras:
                evicted, _ = self._host.popitem(last=False)
                log.info("adapter %s dropped from host memory", evicted)
        return host

    def _evict_beyond_limit(self) -> None:
        with self._model_lock, self._lock:
            idle = [n for n in self._on_device if not self._pins[n]]  # least recently used first
            forgotten = [n for n in idle if n not in self._folders]
            for name in forgotten:
                self._remove_from_device(name)
            idle = [n for n in idle if n not in forgotten]
            for name in idle[: max(0, len(self._on_device) - self._max_loras)]:
                self._remove_from_device(name)

    def _remove_from_device(self, name: str) -> None:
        """Called with both locks held."""
        del self._on_device[name]
        self.version += 1
        if self.merge.adapter == name:
            self.merge.unmerge()  # its deltas must not outlive it in the weights
        if not self._on_device:
            self.merge.release()
        log.info("adapter %s removed from the model", name)
