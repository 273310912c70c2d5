"""Chat and text completions with Hugging Face transformers and LoRA adapters (as PEFT saves them).

The portable engine: any machine with torch runs it. Decoding is a hand-written token loop over the
KV cache rather than `model.generate` (engines.batcher): requests join and leave one running batch
between steps, rows of one batch may use different adapters, one code path serves plain and
streamed completions, stop strings are honoured while streaming, each sequence samples with its
own state (seed, penalties, logit bias, grammar, logprobs), and an abandoned stream leaves the
batch at the next step. The `n` choices of a prompt share one prefill.
"""

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from tunery_inference.engines.base import Prompt
from tunery_inference.engines.batcher import DecodeLoop, Request, Row
from tunery_inference.engines.choice_text import ChoiceText
from tunery_inference.engines.choice_text import Detokenizer as _Detokenizer
from tunery_inference.engines.constrained import Grammars
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.lora_batch import AdapterRouter
from tunery_inference.engines.lora_residency import AdapterResidency
from tunery_inference.engines.outputs import Completion
from tunery_inference.engines.prefix_cache import PrefixCache
from tunery_inference.engines.prompts import (
    chat_prompt_ids,
    check_logit_bias,
    completion_room,
    eos_token_ids,
    prompt_ids,
)
from tunery_inference.engines.sampling import GenerationParams, ResponseFormat, SequenceSampler
from tunery_inference.engines.streams import EngineStream
from tunery_inference.engines.vocabulary import Vocabulary

# What callers of this engine need, importable from here too.
__all__ = ["Completion", "GenerationParams", "HFEngine", "RequestError", "ResponseFormat", "_Detokenizer"]

log = logging.getLogger(__name__)
_CLOSE_WAIT_S = 30.0  # for the running requests to end when the engine closes


class HFEngine:
    """One base model in memory with LoRA adapters, decoding every request in one running batch."""

    def __init__(
        self,
        model_dir: Path,
        device: str | None = None,
        *,
        max_batch: int = 64,
        prefill_chunk: int = 512,
        max_loras: int = 8,
        max_cpu_loras: int = 32,
        merge_after_passes: int | None = 8,
        prefix_cache_mb: float = 256,
    ):
        """`merge_after_passes`: a lone adapter is merged into the base weights once every request
        in sight has used it alone for that many forward passes (engines.lora_batch); None: never.
        `prefix_cache_mb`: memory for the KV of prompt prefixes that later prompts reuse
        (engines.prefix_cache); 0: no prefix caching.
        """
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        with _no_progress_bars():
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        model = model.to(self.device).eval()
        self.context_length: int = model.config.max_position_embeddings
        self._eos_ids = eos_token_ids(self.tokenizer, model_dir)
        self.vocab_size: int = model.get_output_embeddings().out_features  # the width of the logits
        self.vocabulary = Vocabulary(self.tokenizer, self.vocab_size, self._eos_ids)
        self.grammars = Grammars(self.vocabulary)
        # Held by the decode loop for each step and by adapter changes: the model changes only
        # between steps. Whoever holds it holds the batch still (requests queue up meanwhile).
        self.model_lock = model_lock = threading.RLock()
        self.adapters = AdapterResidency(model, model_lock, max_loras, max_cpu_loras)
        adapters = self.adapters  # not self: the loop thread must not keep the engine alive
        # None when off; its `hits` and `tokens_reused` are for monitoring.
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
        self._loop = DecodeLoop(
            lambda: (adapters.model, adapters.version),
            model_lock,
            self.device,
            max_batch,
            prefill_chunk,
            AdapterRouter(adapters, merge_after_passes),
            self.prefix_cache,
        )
        log.info("loaded %s on %s (%s)", model_dir, self.device, dtype)

    @property
    def peak_batch(self) -> int:
        """The most sequences decoded together so far."""
        return self._loop.peak_rows

    def close(self) -> None:
        """Ends the decode loop thread after the requests it has (waiting for them a while)."""
        self._loop.close(wait_s=_CLOSE_WAIT_S)

    def __del__(self) -> None:
        if hasattr(self, "_loop"):
            self._loop.close()

    # -- adapters ---------------------------------------------------------------------------------

    def load_adapter(self, name: str, adapter_dir: Path) -> None:
        """Load a LoRA adapter folder (as PEFT saves it) under `name`; a name already loaded is
        left as it is. It may be evicted later (least recently used); a request for it then
        loads it again. OSError, or UnsupportedAdapter (a ValueError) saying what is wrong with
        the folder; nothing is kept then."""
        if self.adapters.known(name):
            return
        self.adapters.register(name, adapter_dir)
        try:
            self.adapters.acquire(name)
        except (OSError, ValueError):
            self.adapters.forget(name)
            raise
        self.adapters.release(name)
        log.info("loaded adapter %s from %s", name, adapter_dir)

    def remove_adapter(self, name: str) -> None:
        self.adapters.forget(name)
        log.info("removed adapter %s", name)

    def has_adapter(self, name: str) -> bool:
        """Whether requests may name the adapter (it is loaded, or loads on demand)."""
        return self.adapters.known(name)

    # -- generation -------------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return len(chat_prompt_ids(self.tokenizer, messages, None))

    def generate(
        self,
        prompt: Prompt,
        adapter: str | None,
        params: GenerationParams,
        tools: list[dict] | None = None,
    ) -> Completion:
        *_, completion = self.stream(prompt, adapter, params, tools)
        assert isinstance(completion, Completion)
        return completion

    def stream(
        self,
        prompt: Prompt,
        adapter: str | None,
        params: GenerationParams,
        tools: list[dict] | None = None,
    ) -> EngineStream:
        """Each choice's text deltas and then the Choice, choice after choice, then the Completion.

        `prompt` is chat messages (rendered with the model's chat template, `tools` included) or
        raw text. Bad requests raise here, before the first delta: RequestError naming the
        parameter, KeyError for an adapter that is not loaded. Decoding starts at once, in the
        running batch; closing or dropping the iterator takes the request out of it.
        """
        ids, param = prompt_ids(self.tokenizer, prompt, tools)
        room = completion_room(len(ids), self.context_length, param)
        check_logit_bias(params, self.vocab_size)
        fmt = params.response_format
        constraints = [self.grammars.constraint(fmt.type, fmt.json_schema) for _ in range(params.n)]
        max_new = min(params.max_tokens, room)
        rows = []
        for index, constraint in enumerate(constraints):
            sampler = SequenceSampler(params, params.choice_seed(index), self.device, constraint)
            text = ChoiceText(index, self.tokenizer, self.vocabulary, self._eos_ids, sampler)
            rows.append(Row(sampler, text, max_new))
        if adapter is not None:
            self._acquire(adapter)  # pinned (loaded if it was evicted) until the request is done
        request = Request(ids, adapter, rows, on_done=_once(lambda: self._release(adapter)))
        self._loop.submit(request)
        stream = EngineStream([row.out for row in request.rows], len(ids), request.cancel)
        weakref.finalize(stream, request.cancel)  # a stream dropped before it started
        return stream

    def _acquire(self, adapter: str) -> None:
        try:
            self.adapters.acquire(adapter)
        except (OSError, ValueError) as exc:  # its folder went away, the model was deleted
            self.adapters.forget(adapter)
            raise KeyError(f"adapter {adapter!r} is no longer available: {exc}") from None

    def _release(self, adapter: str | None) -> None:
        if adapter is not None:
            self.adapters.release(adapter)


def _once(action):
    done = threading.Lock()

    def run() -> None:
        if done.acquire(blocking=False):
            action()

    return run


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """A service logs; it does not draw tqdm bars (transformers 5 draws one for loading weights)."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
