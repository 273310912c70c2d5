"""Iteration-level scheduling: one decode loop over a batch that requests join and leave.

One thread owns the model's forward passes. Between two decoding steps it prefills newcomers (a
long prompt in chunks, so the running batch is not held up for long) and adds their choices to the
batch; a choice leaves as soon as it ends (end of sequence, stop string, complete grammar,
max_tokens) or its client went away. No time windows: a request waits at most one step.

The batch keeps one KV cache for all rows, left-padded to the longest row: each row has its own
length, its own positions and an attention mask that hides its padding, so each row computes
what it would alone. Columns that became padding for every row (the longest one left) are cut.

Prefills reuse the KV of cached prompt prefixes (engines.prefix_cache): only the rest is prefilled.
"""

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from tunery_inference.engines.choice_text import ChoiceText
from tunery_inference.engines.lora_batch import AdapterRouter
from tunery_inference.engines.prefix_cache import PrefixCache, PrefixMatch
from tunery_inference.engines.sampling import SequenceSampler
from tunery_inference.engines.streams import Outbox

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Row:
    """One choice being decoded; what it produces (Delta, Choice, or an exception) goes to `out`."""

    sampler: SequenceSampler
    text: ChoiceText
    max_new: int
    out: Outbox = field(default_factory=Outbox)
    generated: int = 0
    next_token: int = 0  # sampled (or the prompt's last token), not yet fed to the model


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    adapter: str | None
    rows: list[Row]
    on_done: Callable[[], None]  # called once, from the loop, when no row of it runs any more
    cancelled: bool = False  # set by the consumer (client gone); the loop drops its rows
    prefilled: int = 0
    cache: DynamicCache | None = None
    prefix: PrefixMatch | None = None  # the cached prefix it started from
    running: int = 0  # rows in the batch

    def cancel(self) -> None:
        self.cancelled = True


class DecodeLoop:
    def __init__(
        self,
        model: Callable[[], tuple[torch.nn.Module, int]],
        model_lock: threading.RLock,
        device: str,
        max_batch: int,
        prefill_chunk: int,
        router: AdapterRouter,
        prefix_cache: PrefixCache | None = None,
    ):
        # The current model object (adapter changes may re-wrap it) and its adapter set's version.
        self._model = model
        self._router = router
        self._model_lock = model_lock
        self._device = device
        self._max_batch = max_batch
        self._prefill_chunk = prefill_chunk
        self._prefix_cache = prefix_cache
        self._incoming: deque[Request] = deque()
        self._closed = False
        self._wake = threading.Condition()
        self._prefilling: deque[Request] = deque()
        # The batch: row i of the cache and mask belongs to self._rows[i].
        self._rows: list[Row] = []
        self._joining: list[tuple[DynamicCache, int]] = []  # admitted rows' caches, not yet in the batch's
        self._owners: list[Request] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cached positions], 0 for padding
        self.peak_rows = 0  # the largest batch so far, for monitoring
        self._thread = threading.Thread(target=self._run, name="decode-loop", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        with self._wake:
            self._incoming.append(request)
            self._wake.notify()

    def close(self, wait_s: float = 0) -> None:
        """Stops the loop thread once the work it has is done, waiting up to `wait_s` for it: a
        process that exits while the thread is inside a forward pass is aborted by the runtime."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if wait_s and threading.current_thread() is not self._thread:
            self._thread.join(wait_s)

    @property
    def running_rows(self) -> int:
        return len(self._rows)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._incoming or self._prefilling or self._rows):
                    if self._closed:
                        return
                    self._wake.wait()
            try:
                with self._model_lock:
                    with self._wake:  # all that arrived until the model was free
                        self._prefilling.extend(self._incoming)
                        self._incoming.clear()
                    self._drop_cancelled()
                    self._admit()
                    self._join()
                    if self._rows:
                        self._step()
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not the loop
                log.exception("decoding step failed")
                self._fail_all(exc)

    def _admit(self) -> None:
        """Prefills waiting requests, up to one chunk of prompt tokens per step."""
        budget = self._prefill_chunk
        while self._prefilling and budget > 0:
            request = self._prefilling[0]
            if len(self._rows) + len(request.rows) > self._max_batch and self._rows:
                return  # the batch is full: wait for rows to leave
            if request.cache is None:
                self._start_prefill(request)
                if 0 < request.prefilled == len(request.prompt_ids) - 1:
                    # All but the last token were cached: it goes through the next decoding
                    # step with the batch's rows instead of a forward pass of its own.
                    self._prefilling.popleft()
                    for row in request.rows:
                        row.next_token = request.prompt_ids[-1]
                    self._add_rows(request, request.rows)
                    budget -= 1
                    continue
            chunk = request.prompt_ids[request.prefilled : request.prefilled + budget]
            self._router.before_forward(*self._model(), self._adapters_in_sight())
            logits = self._router.forward(
                *self._model(),
                [request.adapter],
                input_ids=torch.tensor([chunk], device=self._device),
                cache=request.cache,
            )[0]
            request.prefilled += len(chunk)
            budget -= len(chunk)
            if request.prefilled == len(request.prompt_ids):
                self._prefilling.popleft()
                if self._prefix_cache is not None:  # before joining the batch changes the cache
                    self._prefix_cache.remember(request.prefix, request.cache, self._model()[1])
                self._start(request, logits)

    def _start_prefill(self, request: Request) -> None:
        """The request's cache, holding the longest cached prefix of its prompt, if any."""
        model, version = self._model()
        if self._prefix_cache is None:
            request.cache = DynamicCache(config=model.config)
            return
        request.prefix = self._prefix_cache.match(request.adapter, request.prompt_ids, version)
        request.cache = self._prefix_cache.start_cache(request.prefix, model.config)
        request.prefilled = request.prefix.length

    def _start(self, request: Request, logits: torch.Tensor) -> None:
        """Each choice's first token from the prompt's logits; the choices that go on join the batch."""
        self._add_rows(request, [row for row in request.rows if self._advance(row, logits)])

    def _add_rows(self, request: Request, rows: list[Row]) -> None:
        """The request's rows join the batch with its prefilled cache (none: the request is done)."""
        if rows:
            self._joining.append((request.cache, len(rows)))  # the cache joins before the next step
            self._rows += rows
            self.peak_rows = max(self.peak_rows, len(self._rows))
            self._owners += [request] * len(rows)
            request.running = len(rows)
        request.cache = request.prefix = None
        if not rows:
            request.on_done()

    def _step(self) -> None:
        """One token for every row of the batch."""
        rows = self._rows
        self._router.before_forward(*self._model(), self._adapters_in_sight())
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], dim=1)
        logits = self._router.forward(
            *self._model(),
            [owner.adapter for owner in self._owners],
            input_ids=torch.tensor([[row.next_token] for row in rows], device=self._device),
            position_ids=torch.tensor(
                [  # a row that joined at its prompt's last token has generated none yet
                    [len(owner.prompt_ids) + row.generated - 1]
                    for row, owner in zip(rows, self._owners, strict=True)
                ],
                device=self._device,
            ),
            attention_mask=self._mask,
            cache=self._cache,
        )
        self._keep([i for i, row in enumerate(rows) if self._advance(row, logits[i])])

    def _adapters_in_sight(self) -> set[str | None]:
        """The adapters of the batch's rows and of the requests being prefilled or waiting."""
        with self._wake:
            waiting = {request.adapter for request in (*self._prefilling, *self._incoming)}
        return waiting.union(owner.adapter for owner in self._owners)

    def _advance(self, row: Row, logits: torch.Tensor) -> bool:
        """Samples the row's next token and hands out its text; False once the row has ended."""
        sampled = row.sampler.step(logits)
        row.generated += 1
        for item in row.text.push(sampled):
            row.out.put(item)
        if not (row.text.done or row.generated >= row.max_new):
            row.next_token = sampled.token
            return True
        for item in row.text.finish():
            row.out.put(item)
        return False

    # -- the batch's cache ------------------------------------------------------------------------

    def _join(self) -> None:
        """Adds the prefilled one-row caches of the requests admitted since the last step to the
        batch, each as many times as it has rows (the n choices of a prompt): one concatenation
        per layer for all of them, not one per request."""
        joining, self._joining = self._joining, []
        if not joining:
            return
        lengths = [cache.get_seq_length() for cache, _ in joining]
        sources, masks, width = joining, [], max(lengths)
        if self._cache is not None:
            sources = [(self._cache, 1), *joining]
            width = max(width, self._mask.shape[1])
            masks.append(F.pad(self._mask, (width - self._mask.shape[1], 0)))
        for (_, copies), length in zip(joining, lengths, strict=True):
            ones = torch.ones(copies, length, dtype=torch.long, device=self._device)
            masks.append(F.pad(ones, (width - length, 0)))
        target = sources[0][0]
        for i, layer in enumerate(target.layers):
            layer.keys = torch.cat([_pad_left(c.layers[i].keys, width, n) for c, n in sources])
            layer.values = torch.cat([_pad_left(c.layers[i].values, width, n) for c, n in sources])
        self._cache, self._mask = target, torch.cat(masks)

    def _keep(self, indices: list[int]) -> None:
        """Keeps these rows of the batch; the others have ended."""
        if len(indices) == len(self._rows):
            return
        gone = set(range(len(self._rows))) - set(indices)
        for i in gone:
            owner = self._owners[i]
            owner.running -= 1
            if owner.running == 0:
                owner.on_done()
        self._rows = [self._rows[i] for i in indices]
        self._owners = [self._owners[i] for i in indices]
        if not indices:
            self._cache = self._mask = None
            return
        selected = torch.tensor(indices, device=self._device)
        mask = self._mask[selected]
        start = int(mask.any(dim=0).nonzero()[0])  # columns before it are padding in every row
        self._mask = mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[selected, :, start:]
            layer.values = layer.values[selected, :, start:]

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._prefilling if r.cancelled]:
            self._prefilling.remove(request)
            request.on_done()
        if any(owner.cancelled for owner in self._owners):
            self._keep([i for i, owner in enumerate(self._owners) if not owner.cancelled])

    def _fail_all(self, exc: Exception) -> None:
        requests = list(dict.fromkeys(self._owners + list(self._prefilling)))
        self._rows, self._owners, self._cache, self._mask = [], [], None, None
        self._joining = []
        self._prefilling.clear()
        for request in requests:
            for row in request.rows:
                row.out.put(exc)
            request.on_done()


def _pad_left(states: torch.Tensor, width: int, copies: int = 1) -> torch.Tensor:
    """[rows, heads, positions, dim] padded with zeros before the first position up to `width`
    (a one-row cache repeated `copies` times)."""
    padded = states if states.shape[2] == width else F.pad(states, (0, 0, width - states.shape[2], 0))
    return padded.expand(copies, -1, -1, -1) if copies > 1 else padded
