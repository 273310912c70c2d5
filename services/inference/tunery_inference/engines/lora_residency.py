"""Which LoRA adapters are loaded, in two tiers with least-recently-used eviction.

- in the model: PEFT LoRA modules that a batch row can use (at most `max_loras`);
- in host memory: the adapter's config and weights read from disk (at most `max_cpu_loras`), so
  that bringing an evicted adapter back into the model costs no disk read.

Every adapter ever loaded keeps its folder, so a request for an evicted one loads it again on
demand. An adapter in use by a running sequence is pinned and never evicted; when more adapters
are in use at once than `max_loras`, the model holds more for a while rather than refusing.
"""

import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, load_peft_weights, set_peft_model_state_dict

from tunery_inference.engines.lora_merge import LoneAdapterMerge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostAdapter:
    config: PeftConfig
    weights: dict[str, torch.Tensor]


class AdapterResidency:
    """Owns the model's adapter set. `model_lock` guards the model: adapters change between
    decoding steps, never during one. It is re-entrant: the decode loop releases adapters
    (which may evict) while it holds the model."""

    def __init__(
        self, model: torch.nn.Module, model_lock: threading.RLock, max_loras: int, max_cpu_loras: int
    ):
        self.model = model  # wrapped in a PeftModel while any adapter is in it
        self._model_lock = model_lock
        self._max_loras = max_loras
        self._max_cpu_loras = max(max_cpu_loras, max_loras)
        self._folders: dict[str, Path] = {}
        self._host: OrderedDict[str, HostAdapter] = OrderedDict()
        self._in_model: OrderedDict[str, None] = OrderedDict()
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()  # the bookkeeping above
        self.merge = LoneAdapterMerge()  # the adapter the base weights carry, if any (under model_lock)
        self.version = 0  # changes with every adapter added to or removed from the model

    def register(self, name: str, folder: Path) -> None:
        """Remember where an adapter lives, without loading it."""
        with self._lock:
            self._folders[name] = folder

    def known(self, name: str) -> bool:
        with self._lock:
            return name in self._folders

    def in_model(self, name: str) -> bool:
        with self._lock:
            return name in self._in_model

    def acquire(self, name: str) -> None:
        """Makes the adapter usable by the model and pins it until `release`. KeyError for a
        name that was never registered (or was forgotten)."""
        with self._lock:
            if name not in self._folders:
                raise KeyError(f"adapter {name!r} is not loaded")
            self._pins[name] += 1
            if name in self._in_model:
                self._in_model.move_to_end(name)
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
        """Drops the adapter from every tier; KeyError if it is not known."""
        with self._lock:
            if name not in self._folders:
                raise KeyError(f"adapter {name!r} is not loaded")
            del self._folders[name]
            self._host.pop(name, None)
            loaded = name in self._in_model
        if loaded:
            with self._model_lock, self._lock:
                self._remove_from_model(name)

    def _bring_in(self, name: str) -> None:
        host = self._host_copy(name)
        with self._model_lock, self._lock:
            if name not in self._in_model:
                config = host.config
                if isinstance(self.model, PeftModel):
                    self.model.add_adapter(name, config, low_cpu_mem_usage=True)
                else:
                    self.model = PeftModel(self.model, config, adapter_name=name, low_cpu_mem_usage=True)
                set_peft_model_state_dict(self.model, host.weights, adapter_name=name, low_cpu_mem_usage=True)
                self.model.eval()
                self.version += 1
                self._in_model[name] = None
                log.info("adapter %s loaded into the model", name)
            self._in_model.move_to_end(name)
        self._evict_beyond_limit()

    def _host_copy(self, name: str) -> HostAdapter:
        with self._lock:
            if name in self._host:
                self._host.move_to_end(name)
                return self._host[name]
            folder = self._folders[name]
        config = PeftConfig.from_pretrained(folder)
        config.inference_mode = True
        device = next(self.model.parameters()).device
        weights = load_peft_weights(str(folder), device=str(device))
        host = HostAdapter(config, weights)
        with self._lock:
            self._host[name] = host
            while len(self._host) > self._max_cpu_loras:
                evicted, _ = self._host.popitem(last=False)
                log.info("adapter %s dropped from host memory", evicted)
        return host

    def _evict_beyond_limit(self) -> None:
        with self._model_lock, self._lock:
            idle = [n for n in self._in_model if not self._pins[n]]  # least recently used first
            for name in idle[: max(0, len(self._in_model) - self._max_loras)]:
                self._remove_from_model(name)

    def _remove_from_model(self, name: str) -> None:
        """Called with both locks held."""
        self._in_model.pop(name, None)
        self.version += 1
        if self.merge.adapter == name:
            self.merge.unmerge()  # its deltas must not outlive it in the weights (PEFT may unload below)
        model = self.model
        if not isinstance(model, PeftModel) or name not in model.peft_config:
            return
        names = list(model.peft_config)
        if names == [name]:
            # PEFT cannot run a PeftModel without adapters: restore the plain base model.
            self.merge.release()
            self.model = model.unload()
        else:
            # Switch away first; deleting the active adapter makes PEFT warn.
            model.set_adapter(next(n for n in names if n != name))
            model.delete_adapter(name)
        log.info("adapter %s removed from the model", name)
