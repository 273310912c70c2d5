"""One forward pass over batch rows that may each use a different LoRA adapter (or none).

PEFT's mixed-batch inference (`adapter_names=`) runs the base layer for all rows and adds each
adapter's x·A·B to its own rows. It costs a scan of the model's modules and a gather per adapter
per layer, so the common cases take the plain paths: no adapter in the batch turns the LoRA
layers off, one adapter for every row makes it the active one. Those switches walk the model too
(and PEFT's `disable_adapter()` context even computes a status report), so they are made only
when the batch's needs change, not at every step.
"""

import torch
from peft import PeftModel

BASE_ROW = "__base__"  # PEFT's name for a row without an adapter


class AdapterRouter:
    def __init__(self) -> None:
        self._state: tuple | None = None  # (model, adapter set version, layers enabled)

    def forward(
        self, model: torch.nn.Module, version: int, adapters: list[str | None], **inputs
    ) -> torch.Tensor:
        """The last position's logits of each row, [rows, vocabulary]. `version` changes whenever
        adapters are added to or removed from the model (which may reset what was switched)."""
        used = set(adapters)
        if isinstance(model, PeftModel):
            self._enable_layers(model, version, used != {None})
            if len(used) == 1 and None not in used:
                (name,) = used
                if model.active_adapter != name:
                    model.set_adapter(name)
            elif len(used) > 1:
                inputs["adapter_names"] = [name or BASE_ROW for name in adapters]
        elif used != {None}:
            raise KeyError(f"adapter {next(a for a in adapters if a)!r} is not loaded")
        with torch.inference_mode():
            return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]

    def _enable_layers(self, model: PeftModel, version: int, enabled: bool) -> None:
        if self._state == (model, version, enabled):
            return
        if enabled:
            model.base_model.enable_adapter_layers()
        else:
            model.base_model.disable_adapter_layers()
        self._state = (model, version, enabled)
