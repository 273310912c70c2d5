"""Chat and text completions with vLLM (its public `AsyncLLM` API) and LoRA adapters.

The engine for GPUs: paged attention, continuous batching, CUDA graphs and batched LoRA kernels,
with vLLM's own GPU slots (`max_loras`) and host cache (`max_cpu_loras`) of adapters.

What a request means is decided here as in the transformers engine, with the same modules: the
prompt's token ids (engines.prompts: chat template, tools, context checks), the grammar of a
response format (engines.constrained, enforced by vLLM's llguidance backend), and the text of each
choice (engines.choice_text: detokenizing, stop strings held back while streaming, logprobs with
their text offsets). vLLM samples the tokens and we turn them into the same Delta / Choice /
Completion items.

Each of the `n` choices is a vLLM request of its own, sampled with the choice's seed as the other
engine does (vLLM's prefix cache shares the prompt between them), and is aborted as soon as its
text is complete (a stop string) or its stream is closed. AsyncLLM lives on an event loop in a
thread of this engine, which fills each choice's outbox (engines.streams).

Differences from the transformers engine: sampling draws from vLLM's random generators, so seeded
outputs differ between engines (greedy ones agree); logprobs are the model's own (vLLM's
`raw_logprobs`: before logit bias, penalties and grammar).
"""

import asyncio
import itertools
import json
import logging
import os
import threading
import uuid
import weakref
from collections import Counter
from concurrent.futures import Future
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from vllm import AsyncEngineArgs, SamplingParams, TokensPrompt
from vllm.config import StructuredOutputsConfig
from vllm.exceptions import VLLMClientError
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM

from tunery_inference.engines.base import Prompt
from tunery_inference.engines.choice_text import ChoiceText
from tunery_inference.engines.constrained import Grammars
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.outputs import Choice, Completion
from tunery_inference.engines.prompts import check_logit_bias, completion_room, eos_token_ids, prompt_ids
from tunery_inference.engines.sampling import MAX_TOP_LOGPROBS, GenerationParams, Sampled, SequenceSampler
from tunery_inference.engines.streams import EngineStream, Outbox
from tunery_inference.engines.vocabulary import Vocabulary

log = logging.getLogger(__name__)

# On a machine without a GPU vLLM sizes its KV cache as `gpu_memory_utilization` of the host's
# memory (and refuses to start when less is free): a service that shares the host takes this.
CPU_KV_CACHE_GB = 2.0
_GIB = 1 << 30


class VLLMEngine:
    """One base model in a vLLM engine (its own processes), with LoRA adapters loaded by name."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_batch: int = 64,
        max_loras: int = 8,
        max_cpu_loras: int = 32,
        max_lora_rank: int = 64,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        kv_cache_gb: float | None = None,
        enforce_eager: bool = False,
        dtype: str = "auto",
    ):
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(model_dir)
        self._eos_ids = eos_token_ids(self.tokenizer, model_dir)
        self.max_lora_rank = max_lora_rank
        if kv_cache_gb is None and not torch.cuda.is_available():
            kv_cache_gb = CPU_KV_CACHE_GB
        args = AsyncEngineArgs(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_batch,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=None if kv_cache_gb is None else int(kv_cache_gb * _GIB),
            enforce_eager=enforce_eager,
            enable_lora=True,
            max_loras=max_loras,
            max_cpu_loras=max_cpu_loras,
            max_lora_rank=max_lora_rank,
            max_logprobs=MAX_TOP_LOGPROBS,
            # llguidance, as engines.constrained: both engines enforce the same JSON grammar.
            structured_outputs_config=StructuredOutputsConfig(backend="guidance"),
        )
        # vLLM starts its engine core in another process. This one runs gRPC and NATS threads,
        # which a forked child would inherit in whatever state they were: start a fresh one.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self._loop = _LoopThread()
        try:
            self._llm: AsyncLLM = self._loop.run(_start_engine(args))
        except BaseException:
            self._loop.close()
            raise
        self.context_length: int = self._llm.model_config.max_model_len
        self.vocab_size: int = self._llm.model_config.get_vocab_size()
        self.vocabulary = Vocabulary(self.tokenizer, self.vocab_size, self._eos_ids)
        self.grammars = Grammars(self.vocabulary)
        self._max_batch = max_batch
        self._adapters: dict[str, LoRARequest] = {}
        self._adapter_ids: dict[str, int] = {}  # stable per name, never reused for another one
        self._next_adapter_id = itertools.count(1)
        self._in_use: Counter[str] = Counter()  # running choices per adapter
        self._removed: dict[str, LoRARequest] = {}  # left vLLM's cache once its choices end
        self._running = 0  # choices whose vLLM request has not ended
        self._peak = 0
        self._lock = threading.Lock()  # the adapter and running-choice bookkeeping above
        self._idle = threading.Condition(self._lock)
        log.info("loaded %s in vLLM (context %d)", model_dir, self.context_length)

    @property
    def peak_batch(self) -> int:
        """The most choices generating at once so far (vLLM runs up to `max_batch` of them)."""
        return min(self._peak, self._max_batch)

    @property
    def unfinished_requests(self) -> int:
        """Requests vLLM holds, waiting or generating (an aborted one is gone at once)."""
        return self._llm.get_num_unfinished_requests()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no choice runs in vLLM (a closed stream's are aborted by then)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def close(self) -> None:
        """Stops vLLM's processes and the engine's event loop."""
        # Dropped here: AsyncLLM shuts down again when collected, which at interpreter exit fails
        # noisily (its modules are gone by then).
        llm = self.__dict__.pop("_llm", None)
        if llm is None:
            return
        try:
            # On the loop, so that vLLM's output handler is cancelled before it could see the
            # engine core go away (and log that as a failure).
            self._loop.run(_shutdown(llm))
        finally:
            self._loop.close()

    # -- adapters ---------------------------------------------------------------------------------

    def load_adapter(self, name: str, adapter_dir: Path) -> None:
        """Registers a PEFT LoRA folder under `name` and reads it into vLLM's adapter cache; a
        name already loaded is left as it is. vLLM evicts least recently used adapters from its
        GPU slots and host cache, and reads an evicted one again from its folder when needed."""
        with self._lock:
            if name in self._adapters:
                return
        rank = _lora_rank(adapter_dir)
        if rank > self.max_lora_rank:
            raise RequestError(
                f"the model's LoRA rank is {rank}; this inference server serves ranks up to "
                f"{self.max_lora_rank} (TUNERY_INFERENCE_MAX_LORA_RANK)",
                "model",
            )
        with self._lock:
            adapter_id = self._adapter_ids.setdefault(name, next(self._next_adapter_id))
        request = LoRARequest(name, adapter_id, str(adapter_dir))
        self._loop.run(self._llm.add_lora(request))
        with self._lock:
            self._adapters[name] = request
            self._removed.pop(name, None)
        log.info("loaded adapter %s from %s", name, adapter_dir)

    def remove_adapter(self, name: str) -> None:
        """Requests may no longer name the adapter; vLLM drops it once its running choices end."""
        with self._lock:
            request = self._adapters.pop(name)  # KeyError for a name that is not loaded
            if self._in_use[name]:
                self._removed[name] = request
                request = None
        if request is not None:
            self._loop.run(self._llm.remove_lora(request.lora_int_id))
        log.info("removed adapter %s", name)

    def has_adapter(self, name: str) -> bool:
        """Whether requests may name the adapter (it is loaded, or loads on demand)."""
        with self._lock:
            return name in self._adapters

    # -- generation -------------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return len(prompt_ids(self.tokenizer, messages, None)[0])

    def generate(
        self, prompt: Prompt, adapter: str | None, params: GenerationParams, tools: list[dict] | None = None
    ) -> Completion:
        *_, completion = self.stream(prompt, adapter, params, tools)
        assert isinstance(completion, Completion)
        return completion

    def stream(
        self, prompt: Prompt, adapter: str | None, params: GenerationParams, tools: list[dict] | None = None
    ) -> EngineStream:
        """Each choice's text deltas and then the Choice, choice after choice, then the Completion.

        `prompt` is chat messages (rendered with the model's chat template, `tools` included) or
        raw text. Bad requests raise here, before the first delta: RequestError naming the
        parameter, KeyError for an adapter that is not loaded. Generation starts at once;
        closing the iterator aborts the choices still running in vLLM.
        """
        ids, param = prompt_ids(self.tokenizer, prompt, tools)
        room = completion_room(len(ids), self.context_length, param)
        check_logit_bias(params, self.vocab_size)
        fmt = params.response_format
        schema = self.grammars.enforced_schema(fmt.type, fmt.json_schema)
        try:
            sampling = [self._sampling(params, index, room, schema) for index in range(params.n)]
        except VLLMClientError as exc:
            raise _request_error(exc) from None
        lora = self._lora_request(adapter)
        choices = [
            _RunningChoice(self._choice_text(index, params), choice_sampling, self._loop)
            for index, choice_sampling in enumerate(sampling)
        ]
        self._started(adapter, len(choices))
        for choice in choices:
            choice.start(self._generate(choice, ids, lora), lambda: self._ended(adapter))
        stream = EngineStream([choice.out for choice in choices], len(ids), lambda: self._abort(choices))
        weakref.finalize(stream, _cancel, choices)  # a stream dropped before it started
        return stream

    def _abort(self, choices: list["_RunningChoice"]) -> None:
        """Stops the choices still running: when this returns vLLM has dropped them (their
        batch slots and KV cache are free), unless called on the loop itself (a stream
        collected there), which only asks."""
        running = [choice.request_id for choice in choices if not choice.ended]
        llm = self.__dict__.get("_llm")  # None once the engine is closed
        if running and llm is not None and not self._loop.in_loop():
            self._loop.run(llm.abort(running))
        _cancel(choices)

    def _lora_request(self, adapter: str | None) -> LoRARequest | None:
        if adapter is None:
            return None
        with self._lock:
            request = self._adapters.get(adapter)
        if request is None:
            raise KeyError(f"adapter {adapter!r} is not loaded")
        if not (Path(request.lora_path) / "adapter_config.json").exists():
            # vLLM reads an evicted adapter again from its folder, inside a decoding step: a
            # folder that went away (the model was deleted) must not get that far.
            self.remove_adapter(adapter)
            raise KeyError(f"adapter {adapter!r} is no longer available: {request.lora_path} is gone")
        return request

    def _choice_text(self, index: int, params: GenerationParams) -> ChoiceText:
        # The sampler only carries the request's parameters here: vLLM samples, and ends a
        # constrained choice itself when its grammar is complete.
        sampler = SequenceSampler(params, None, "cpu")
        return ChoiceText(index, self.tokenizer, self.vocabulary, self._eos_ids, sampler)

    def _sampling(
        self, params: GenerationParams, index: int, room: int, schema: str | None
    ) -> SamplingParams:
        return SamplingParams(
            n=1,
            max_tokens=min(params.max_tokens, room),
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.choice_seed(index),
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=dict(params.logit_bias) or None,
            logprobs=params.top_logprobs if params.logprobs else None,
            # Stop strings are found in ChoiceText, which aborts the choice: one place decides
            # where a choice's text ends, on both engines.
            stop_token_ids=sorted(self._eos_ids),
            structured_outputs=None if schema is None else StructuredOutputsParams(json=schema),
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,  # ChoiceText turns the tokens into text
        )

    async def _generate(self, choice: "_RunningChoice", ids: list[int], lora: LoRARequest | None) -> None:
        """Runs one choice in vLLM, handing its items to the choice's queue (on the loop thread)."""
        text, out = choice.text, choice.out
        stopped = False
        try:
            generator = self._llm.generate(
                TokensPrompt(prompt_token_ids=ids), choice.sampling, choice.request_id, lora_request=lora
            )
            async with aclosing(generator):  # leaving early aborts the request in vLLM
                async for output in generator:
                    completion = output.outputs[0]
                    for position, token in enumerate(completion.token_ids):
                        sampled = _sampled(token, completion.logprobs, position, choice.sampling)
                        for item in text.push(sampled):
                            out.put(item)
                        if text.done:
                            break
                    stopped = stopped or completion.finish_reason == "stop"
                    if text.done:
                        break
            for item in text.finish():
                if isinstance(item, Choice) and stopped:
                    item = replace(item, finish_reason="stop")  # e.g. vLLM ended a complete grammar
                out.put(item)
        except asyncio.CancelledError:  # its stream was closed, or the engine is closing
            out.put(RuntimeError("the generation was stopped"))
            raise
        except VLLMClientError as exc:  # vLLM refused the request
            out.put(_request_error(exc))
        except Exception as exc:  # noqa: BLE001 - handed to the reader of the stream
            log.exception("vLLM generation failed")
            out.put(exc)

    def _started(self, adapter: str | None, n: int) -> None:
        with self._lock:
            self._running += n
            self._peak = max(self._peak, self._running)
            if adapter is not None:
                self._in_use[adapter] += n

    def _ended(self, adapter: str | None) -> None:
        """A choice's request is over (done, failed or aborted in vLLM); a removed adapter goes
        once none use it. Runs on the loop."""
        with self._lock:
            self._running -= 1
            if not self._running:
                self._idle.notify_all()
            if adapter is None:
                return
            self._in_use[adapter] -= 1
            if self._in_use[adapter]:
                return
            del self._in_use[adapter]
            removed = self._removed.pop(adapter, None)
        if removed is not None:
            self._loop.submit(self._llm.remove_lora(removed.lora_int_id))


class _RunningChoice:
    """One choice's vLLM request: a task on the engine's loop, filling the queue that the
    choice's reader waits on."""

    def __init__(self, text: ChoiceText, sampling: SamplingParams, loop: "_LoopThread"):
        self.text = text
        self.sampling = sampling
        self.out = Outbox()
        self.request_id = uuid.uuid4().hex
        self.ended = False  # its vLLM request is over
        self._loop = loop
        self._task: asyncio.Task | None = None

    def start(self, coroutine, on_end) -> None:
        """Runs the coroutine on the loop; `on_end` once it is over, even cancelled unstarted."""

        def create() -> None:
            self._task = asyncio.ensure_future(coroutine)
            self._task.add_done_callback(lambda _: self._end(on_end))

        self._loop.call_soon(create)

    def _end(self, on_end) -> None:
        self.ended = True
        on_end()

    def cancel(self) -> None:
        """From any thread; the task aborts its vLLM request (after `start`'s call, in order)."""
        self._loop.call_soon(lambda: self._task is not None and self._task.cancel())


def _sampled(token: int, logprobs, position: int, sampling: SamplingParams) -> Sampled:
    """A generated token as ChoiceText takes it, with its logprobs when they were asked for."""
    if sampling.logprobs is None or not logprobs:
        return Sampled(token)
    ranked = logprobs[position]  # token id → Logprob: the k most likely, and the sampled one
    top = sorted(((t, p) for t, p in ranked.items() if p.rank <= sampling.logprobs), key=lambda e: e[1].rank)
    return Sampled(token, ranked[token].logprob, [(t, p.logprob) for t, p in top])


def _cancel(choices: list[_RunningChoice]) -> None:
    for choice in choices:
        choice.cancel()


def _request_error(exc: VLLMClientError) -> RequestError:
    return RequestError(str(exc), getattr(exc, "parameter", None))


def _lora_rank(adapter_dir: Path) -> int:
    try:
        return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError) as exc:
        raise KeyError(f"{adapter_dir} is not a LoRA adapter folder: {exc}") from None


async def _start_engine(args: AsyncEngineArgs) -> AsyncLLM:
    """Made on the engine's loop, which then runs its output handler."""
    return AsyncLLM.from_engine_args(args)


async def _shutdown(llm: AsyncLLM) -> None:
    llm.shutdown()


class _LoopThread:
    """An asyncio event loop running in a thread of its own, for callers that block."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()

    def submit(self, coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine):
        return self.submit(coroutine).result()

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def call_soon(self, callback) -> None:
        """Calls it on the loop, after what was asked before; nothing once the loop is closed."""
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:  # closed: the engine is shut down, nothing runs any more
            pass

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
