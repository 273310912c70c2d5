"""One streamed pass over a JSONL file: errors, token counts and the quality checks' sketches.

Lines are read in batches; a batch is parsed, counted and sketched, then only its results stay:
token counts (bytes in arrays) and, when quality checks run, a sketch per example (a few hundred
bytes), never the raw text. Large files spread their batches over worker processes (the work is
CPU-bound Python), with at most two batches per worker in flight so memory stays bounded.
"""

import gc
import io
import multiprocessing
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tunery_dataprep.errors import LineError
from tunery_dataprep.quality.sketch import ExampleSketch, ExampleText, example_texts, sketch_examples
from tunery_dataprep.tokens import ExampleCounter, example_counter
from tunery_dataprep.validate import LineParser

Source = Path | str | bytes | BinaryIO
Progress = Callable[[int], None]  # bytes read so far
Lines = list[tuple[int, bytes]]  # (line number, raw line)


@dataclass(frozen=True)
class ScanLimits:
    context_length: int  # the model's: a longer example is an error
    truncation_length: int  # what training keeps: a longer example is a warning
    max_errors: int = 100  # errors listed; all are counted
    min_examples: int = 0  # valid examples a training file needs
    batch_lines: int = 2048
    workers: int = 1  # processes for large files
    parallel_from_bytes: int = 32 << 20  # below this, starting workers costs more than it saves
    start_method: str = "fork"  # "forkserver" in a process with threads (the gRPC service)


@dataclass(frozen=True)
class CounterSpec:
    """What a worker process needs to build its own token counter."""

    model: str
    cache_dir: Path

    def load(self) -> ExampleCounter:
        return example_counter(self.model, self.cache_dir)


@dataclass
class FileScan:
    format: str = "chat"
    n_examples: int = 0  # non-blank lines
    errors: list[LineError] = field(default_factory=list)  # the first ones, then whole-file errors
    error_counts: Counter = field(default_factory=Counter)
    totals: array = field(default_factory=lambda: array("q"))  # tokens of each valid example
    trained: array = field(default_factory=lambda: array("q"))
    sketches: list[ExampleSketch] = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        return sum(self.error_counts.values())

    @property
    def n_valid(self) -> int:
        return len(self.totals)

    def merge(self, part: "FileScan", max_errors: int) -> None:
        """Adds the results of the next batch (batches merge in file order)."""
        self.n_examples += part.n_examples
        self.error_counts.update(part.error_counts)
        self.errors.extend(part.errors[: max(0, max_errors - len(self.errors))])
        self.totals.extend(part.totals)
        self.trained.extend(part.trained)
        self.sketches.extend(part.sketches)


@contextmanager
def open_source(source: Source) -> Iterator[tuple[BinaryIO, int | None]]:
    """A binary stream of the source and its size when known."""
    if isinstance(source, bytes):
        yield io.BytesIO(source), len(source)
    elif isinstance(source, str | Path):
        with open(source, "rb") as f:
            yield f, Path(source).stat().st_size
    else:
        yield source, None


def scan_batch(
    lines: Lines, parser: LineParser, counter: ExampleCounter, limits: ScanLimits, sketch: bool
) -> FileScan:
    """Parses, counts and sketches one batch of lines; an example over the context is an error."""
    part = FileScan()

    def add_errors(errors: list[LineError]) -> None:
        for error in errors:
            part.error_counts[error.code] += 1
            if len(part.errors) < limits.max_errors:
                part.errors.append(error)

    texts = []
    for line, raw in lines:
        parsed = parser.parse(raw, line)
        if parsed is None:
            continue
        part.n_examples += 1
        if parsed.errors:
            add_errors(parsed.errors)
            continue
        tokens = counter.count(parsed.example)
        if tokens.longest > limits.context_length:
            why = f"{tokens.longest} tokens, over the model's context of {limits.context_length}"
            add_errors([LineError(line, "example_too_long", why)])
            continue
        part.totals.append(tokens.total)
        part.trained.append(tokens.trained)
        if sketch:
            system, prompt, answer = example_texts(_messages(parsed.example))
            texts.append(
                ExampleText(line, system, prompt, answer, tokens.total, tokens.system, tokens.trained)
            )
    if texts:
        part.sketches = sketch_examples(texts, context_length=limits.truncation_length)
    return part


def _messages(example: dict) -> list[dict]:
    """The messages the sketch describes: a preference example's prompt and preferred answer."""
    if "messages" in example:
        return example["messages"]
    return [*example["input"]["messages"], *example["preferred_output"]]


def _batches(stream: BinaryIO, size: int, progress: Progress | None) -> Iterator[Lines]:
    batch: Lines = []
    done = 0
    for line, raw in enumerate(stream, start=1):
        done += len(raw)
        batch.append((line, raw))
        if len(batch) >= size:
            yield batch
            batch = []
            if progress:
                progress(done)
    if batch:
        yield batch
    if progress:
        progress(done)


# A worker's parser, counter and limits, set once by `_init_worker`.
_worker: tuple | None = None


def _init_worker(spec: CounterSpec, limits: ScanLimits, sketch: bool) -> None:
    global _worker
    _worker = (spec.load(), limits, sketch)


def _work(fmt: str, lines: Lines) -> FileScan:
    counter, limits, sketch = _worker
    parser = LineParser()
    parser.format = fmt
    return scan_batch(lines, parser, counter, limits, sketch)


def scan_file(
    source: Source,
    spec: CounterSpec,
    limits: ScanLimits,
    *,
    sketch: bool = True,
    progress: Progress | None = None,
) -> FileScan:
    counter = spec.load()
    result = FileScan()
    parser = LineParser()
    with open_source(source) as (stream, size), _no_cyclic_gc():
        batches = _batches(stream, limits.batch_lines, progress)
        # The first batch runs here: its first JSON object decides the file's format for all.
        for lines in batches:
            result.merge(scan_batch(lines, parser, counter, limits, sketch), limits.max_errors)
            if parser.format is not None:
                break
        if limits.workers > 1 and (size or 0) >= limits.parallel_from_bytes:
            _scan_parallel(batches, parser.format or "chat", spec, limits, sketch, result)
        else:
            for lines in batches:
                result.merge(scan_batch(lines, parser, counter, limits, sketch), limits.max_errors)
    result.format = parser.format or "chat"
    _whole_file_errors(result, limits)
    return result


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The scan allocates millions of short-lived objects, freed by reference counting, and keeps
    sketches: the cycle collector would walk them again and again for nothing (~15% of the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _scan_parallel(
    batches: Iterator[Lines], fmt: str, spec: CounterSpec, limits: ScanLimits, sketch: bool, result: FileScan
) -> None:
    context = multiprocessing.get_context(limits.start_method)
    with context.Pool(limits.workers, initializer=_init_worker, initargs=(spec, limits, sketch)) as pool:
        pending: deque = deque()
        for lines in batches:
            pending.append(pool.apply_async(_work, (fmt, lines)))
            if len(pending) >= 2 * limits.workers:
                result.merge(pending.popleft().get(), limits.max_errors)
        while pending:
            result.merge(pending.popleft().get(), limits.max_errors)


def _whole_file_errors(result: FileScan, limits: ScanLimits) -> None:
    """Listed after the line errors, even when those filled the list."""
    errors = []
    if result.n_examples == 0:
        errors.append(LineError(0, "empty_file", "the file holds no examples"))
    elif result.n_valid < limits.min_examples:
        need = limits.min_examples
        errors.append(
            LineError(
                0, "not_enough_examples", f"{result.n_valid} valid examples; training needs at least {need}"
            )
        )
    for error in errors:
        result.error_counts[error.code] += 1
        result.errors.append(error)
