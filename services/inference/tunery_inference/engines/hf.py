"""Chat completions with Hugging Face transformers and PEFT LoRA adapters.

The portable engine: any machine with torch runs it. Decoding is a hand-written token loop over the
KV cache rather than `model.generate`, so that one code path serves plain and streamed completions,
stop strings are honoured while streaming, sampling uses a per-request RNG (a seed reproduces a
completion without touching torch's global RNG), and an abandoned stream stops at the next token.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

log = logging.getLogger(__name__)


@dataclass
class GenerationParams:
    max_tokens: int = 256  # clamped to the model's context minus the prompt
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None  # makes sampling reproducible
    stop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class HFEngine:
    """One base model in memory with any number of LoRA adapters, one generation at a time."""

    def __init__(self, model_dir: Path, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        with _no_progress_bars():
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        # Wrapped in a PeftModel once the first adapter is loaded, unwrapped when the last goes.
        self._model: torch.nn.Module = model.to(self.device).eval()
        self.context_length: int = model.config.max_position_embeddings
        eos = model.generation_config.eos_token_id
        # Chat models end a turn with a token (<|im_end|>) that the generation config may list
        # beside the tokenizer's own eos.
        self._eos_ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        # The adapter selection is state of the shared model: generations and adapter changes take turns.
        # A Lock, not an RLock: a stream may be closed from another thread than the one that started it.
        self._lock = threading.Lock()
        log.info("loaded %s on %s (%s)", model_dir, self.device, dtype)

    # -- adapters ---------------------------------------------------------------------------------

    def load_adapter(self, name: str, adapter_dir: Path) -> None:
        """Load a PEFT LoRA adapter folder under `name`; a name already loaded is left as it is."""
        with self._lock:
            if self.has_adapter(name):
                return
            with _no_progress_bars():
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(adapter_dir, adapter_name=name)
                else:
                    self._model = PeftModel.from_pretrained(self._model, adapter_dir, adapter_name=name)
        log.info("loaded adapter %s from %s", name, adapter_dir)

    def remove_adapter(self, name: str) -> None:
        with self._lock:
            self._require_adapter(name)
            names = list(self._model.peft_config)
            if names == [name]:
                # PEFT cannot run a PeftModel without adapters: restore the plain base model.
                self._model = self._model.unload()
            else:
                # Switch away first; deleting the active adapter makes PEFT warn.
                self._model.set_adapter(next(n for n in names if n != name))
                self._model.delete_adapter(name)
        log.info("removed adapter %s", name)

    def has_adapter(self, name: str) -> bool:
        return isinstance(self._model, PeftModel) and name in self._model.peft_config

    # -- generation -------------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return len(self._prompt_ids(messages))

    def generate(self, messages: list[dict], adapter: str | None, params: GenerationParams) -> Completion:
        *_, completion = self.stream(messages, adapter, params)
        assert isinstance(completion, Completion)
        return completion

    def stream(
        self, messages: list[dict], adapter: str | None, params: GenerationParams
    ) -> Iterator[str | Completion]:
        """Text deltas, then the Completion. Bad requests raise here, before the first delta."""
        self._require_adapter(adapter)
        prompt_ids = self._prompt_ids(messages)
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"the prompt has {len(prompt_ids)} tokens; the model's context is {self.context_length}"
            )
        return self._locked_stream(prompt_ids, adapter, params, min(params.max_tokens, room))

    def _locked_stream(
        self, prompt_ids: list[int], adapter: str | None, params: GenerationParams, max_new: int
    ) -> Iterator[str | Completion]:
        # Closing the generator (or dropping it) runs these exits, so an abandoned stream frees the model.
        with self._lock, self._adapter_context(adapter):
            yield from self._decode(prompt_ids, params, max_new)

    def _adapter_context(self, adapter: str | None) -> AbstractContextManager:
        if adapter is None:
            return self._model.disable_adapter() if isinstance(self._model, PeftModel) else nullcontext()
        self._require_adapter(adapter)  # again: it may have been removed while this request waited
        self._model.set_adapter(adapter)
        return nullcontext()

    def _decode(
        self, prompt_ids: list[int], params: GenerationParams, max_new: int
    ) -> Iterator[str | Completion]:
        stops = [s for s in params.stop if s]
        detokenizer = _Detokenizer(self.tokenizer)
        text, sent, finish, generated = "", 0, "length", 0
        cut: int | None = None
        for token in self._sample(prompt_ids, params, max_new):
            generated += 1
            if token in self._eos_ids:
                finish = "stop"
                break
            text += detokenizer.push(token)
            cut = _find_stop(text, stops, sent)
            if cut is not None:
                break
            # Hold back a tail that may be the start of a stop string: it must never reach the client.
            end = len(text) - _stop_prefix_len(text, stops)
            if end > sent:
                yield text[sent:end]
                sent = end
        if cut is None:
            text += detokenizer.flush()
            cut = _find_stop(text, stops, sent)
        if cut is not None:
            text, finish = text[:cut], "stop"
        if len(text) > sent:
            yield text[sent:]
        yield Completion(text, finish, len(prompt_ids), generated)

    def _sample(self, prompt_ids: list[int], params: GenerationParams, max_new: int) -> Iterator[int]:
        """Token ids, one forward pass each, reusing the KV cache."""
        generator = torch.Generator(self.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        inputs = torch.tensor([prompt_ids], device=self.device)
        cache = DynamicCache(config=self._model.config)  # filled in place by each forward pass
        for _ in range(max_new):
            with torch.inference_mode():
                # transformers 5.24 renamed the `past_key_values` argument to `cache`.
                out = self._model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
            token = _pick(out.logits[0, -1], params, generator)
            yield token
            inputs = torch.tensor([[token]], device=self.device)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        # transformers 5 returns a BatchEncoding here unless asked for the bare ids.
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )

    def _require_adapter(self, name: str | None) -> None:
        if name is not None and not self.has_adapter(name):
            raise KeyError(f"adapter {name!r} is not loaded")


def _pick(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator) -> int:
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1:
        # Nucleus sampling: keep the most likely tokens until their mass reaches top_p.
        sorted_probs, order = probs.sort(descending=True)
        probs[order[sorted_probs.cumsum(-1) - sorted_probs >= params.top_p]] = 0
    return int(torch.multinomial(probs, 1, generator=generator))


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    """Where the earliest stop string begins. Text before `start` was sent, so no match starts there."""
    found = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(found, default=None)


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """The length of the longest tail of `text` that a stop string begins with."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


class _Detokenizer:
    """Token ids to text deltas at constant cost per token.

    Re-decoding all ids at every step is quadratic, and decoding each token alone is wrong: a token's
    text depends on its neighbours (a leading space, a character split over byte tokens). So each step
    decodes a short window of recent ids and emits what the newest ones added (as TGI and vLLM do).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._start = 0  # the window begins here
        self._read = 0  # ids before this are already turned into text

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._delta(final=False)

    def flush(self) -> str:
        """The rest, even a character whose bytes the output stopped in the middle of."""
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        before = self._decode(self._ids[self._start : self._read])
        after = self._decode(self._ids[self._start :])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""  # nothing yet, or half a UTF-8 character: wait for the next token
        self._start, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


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
