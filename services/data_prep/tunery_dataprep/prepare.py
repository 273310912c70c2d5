"""Preparation helpers behind `tunery data convert | split | mix`: a file in, files out.

All three write through a temporary file and rename it, so a failure leaves no half-written
output, and they are deterministic for a given seed. Bad input raises ValueError("line N: ...").
"""

import csv
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tunery_dataprep.quality.labels import find_label_sets
from tunery_dataprep.quality.lsh import NEAR_IDENTICAL, cluster_ids
from tunery_dataprep.quality.sketch import (
    ExampleSketch,
    ExampleText,
    example_texts,
    signature_matrix,
    sketch_examples,
)

# Legacy prompt-completion files end every prompt with a separator and every completion with a
# stop sequence; a chat model needs neither. Stripped only when every row has the same one.
PROMPT_SEPARATORS = ("###", "->")
COMPLETION_STOPS = ("END", "###")
_SKETCH_BATCH = 1000
_NO_CONTEXT_LIMIT = 2**62  # sketches here are for grouping, not token checks


def convert_to_chat(
    src: Path,
    out: Path,
    *,
    system: str | None = None,
    prompt_col: str | None = None,
    completion_col: str | None = None,
) -> int:
    """CSV (with a header row) or prompt-completion JSONL → chat JSONL; returns the examples written."""
    columns = (prompt_col or "prompt", completion_col or "completion")
    separator, stop = PROMPT_SEPARATORS, COMPLETION_STOPS
    n = 0
    for _, prompt, completion in _pairs(src, *columns):
        separator = tuple(s for s in separator if prompt.endswith(s))
        stop = tuple(s for s in stop if completion.endswith(s))
        n += 1
    if not n:
        raise ValueError(f"line 1: {src.name} holds no examples")
    with _atomic(out) as sink:
        for _, prompt, completion in _pairs(src, *columns):
            prompt = prompt.removesuffix(separator[0]).rstrip() if separator else prompt
            completion = completion.removesuffix(stop[0]).rstrip() if stop else completion
            messages = [{"role": "system", "content": system}] if system else []
            messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            sink.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return n


def split_dataset(src: Path, out_dir: Path, *, validation_fraction: float, seed: int) -> tuple[int, int]:
    """Writes out_dir/train.jsonl and out_dir/validation.jsonl; returns their example counts.

    Examples with near-identical prompts (exact duplicates included) stay on one side, so the
    validation file never repeats a training prompt; classification-like data is split per class.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError("validation_fraction must lie between 0 and 1")
    sketches = _sketch_file(src)
    if len(sketches) < 2:
        raise ValueError(f"line 1: {src.name} needs at least 2 examples to split")
    in_validation = _allocate(sketches, validation_fraction, np.random.default_rng(seed))
    side = dict(zip((s.line for s in sketches), in_validation, strict=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    with _atomic(out_dir / "train.jsonl") as train, _atomic(out_dir / "validation.jsonl") as valid:
        for line, raw, _ in _chat_lines(src):
            (valid if side[line] else train).write(raw + "\n")
    n_valid = int(sum(in_validation))
    return len(sketches) - n_valid, n_valid


def mix_general(src: Path, general: Path, *, fraction: float, out: Path, seed: int) -> int:
    """Adds general-purpose examples so that they make up `fraction` of the output (shuffled)."""
    if not 0 < fraction < 1:
        raise ValueError("fraction must lie between 0 and 1")
    own = [raw for _, raw, _ in _chat_lines(src)]
    if not own:
        raise ValueError(f"line 1: {src.name} holds no examples")
    need = max(1, round(len(own) * fraction / (1 - fraction)))
    available = sum(1 for _ in _chat_lines(general, where=general.name))
    if need > available:
        raise ValueError(
            f"{general.name} holds {available} examples; {fraction:.0%} of the output needs {need}"
        )
    rng = random.Random(seed)
    chosen = set(rng.sample(range(available), need))
    picked = (raw for i, (_, raw, _) in enumerate(_chat_lines(general, where=general.name)) if i in chosen)
    mixed = own + list(picked)
    rng.shuffle(mixed)
    with _atomic(out) as sink:
        sink.writelines(raw + "\n" for raw in mixed)
    return len(mixed)


def _allocate(sketches: list[ExampleSketch], fraction: float, rng: np.random.Generator) -> list[bool]:
    """Which examples go to validation: whole groups of near-identical prompts, about `fraction` of
    each class (or of everything when there are no classes)."""
    label_sets = find_label_sets(sketches)
    labels = label_sets[0].labels if label_sets else [None] * len(sketches)
    ids = cluster_ids(signature_matrix(sketches), NEAR_IDENTICAL)
    members: dict[int, list[int]] = {}
    for row, group in enumerate(ids.tolist()):
        members.setdefault(group, []).append(row)
    strata: dict[str | None, list[list[int]]] = {}
    for rows in members.values():  # a group's class: the most common label of its rows
        label = Counter(labels[row] for row in rows).most_common(1)[0][0]
        strata.setdefault(label, []).append(rows)
    chosen = [False] * len(sketches)
    for _, stratum in sorted(strata.items(), key=lambda item: str(item[0])):
        size = sum(map(len, stratum))
        target, taken = min(round(fraction * size), size - 1), 0  # every class keeps a training example
        for index in rng.permutation(len(stratum)):
            rows = stratum[index]
            if taken + len(rows) <= target:
                taken += len(rows)
                for row in rows:
                    chosen[row] = True
    if not any(chosen):  # tiny files: still hold out the smallest group
        if len(members) < 2:
            raise ValueError("all examples have near-identical prompts: no split can keep them apart")
        for row in min(members.values(), key=len):
            chosen[row] = True
    return chosen


def _sketch_file(src: Path) -> list[ExampleSketch]:
    sketches: list[ExampleSketch] = []
    batch: list[ExampleText] = []
    for line, _, messages in _chat_lines(src):
        batch.append(ExampleText(line, *example_texts(messages)))
        if len(batch) == _SKETCH_BATCH:
            sketches += sketch_examples(batch, context_length=_NO_CONTEXT_LIMIT)
            batch = []
    return sketches + sketch_examples(batch, context_length=_NO_CONTEXT_LIMIT)


def _chat_lines(path: Path, *, where: str | None = None) -> Iterator[tuple[int, str, list[dict]]]:
    """(line number, the line, its messages) for every non-blank line of a chat JSONL file."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            text = _decode(raw, number, where).strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(_at(number, where, f"invalid JSON: {exc.msg}")) from None
            messages = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise ValueError(_at(number, where, "expected an object with a 'messages' list"))
            yield number, text, messages


def _pairs(src: Path, prompt_col: str, completion_col: str) -> Iterator[tuple[int, str, str]]:
    """(line, prompt, completion) of a CSV file with a header row or of a prompt-completion JSONL file."""
    suffix = src.suffix.lower()
    with src.open("rb") as raw:
        lines = ((number, _decode(line, number)) for number, line in enumerate(raw, start=1))
        if suffix in (".jsonl", ".json") or _first_char(src) == "{":
            yield from _jsonl_pairs(lines, prompt_col, completion_col)
        else:
            yield from _csv_pairs(lines, prompt_col, completion_col, "\t" if suffix == ".tsv" else ",")


def _jsonl_pairs(
    lines: Iterator[tuple[int, str]], prompt_col: str, completion_col: str
) -> Iterator[tuple[int, str, str]]:
    for number, text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: invalid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ValueError(f"line {number}: expected a JSON object")
        yield (
            number,
            _field(row.get(prompt_col), prompt_col, number),
            _field(row.get(completion_col), completion_col, number),
        )


def _csv_pairs(
    lines: Iterator[tuple[int, str]], prompt_col: str, completion_col: str, delimiter: str
) -> Iterator[tuple[int, str, str]]:
    last_read = 0  # the physical line the csv reader has reached (a quoted cell can span lines)

    def texts() -> Iterator[str]:
        nonlocal last_read
        for number, text in lines:
            last_read = number
            yield text

    reader = csv.reader(texts(), delimiter=delimiter)
    header = [cell.strip() for cell in next(reader, [])]
    for column in (prompt_col, completion_col):
        if header and column not in header:
            raise ValueError(f"line {last_read}: no column {column!r} (columns: {', '.join(header)})")
    start = last_read + 1
    for row in reader:
        if any(cell.strip() for cell in row):
            if len(row) != len(header):
                raise ValueError(f"line {start}: {len(row)} cells where the header has {len(header)}")
            cells = dict(zip(header, row, strict=True))
            yield (
                start,
                _field(cells[prompt_col], prompt_col, start),
                _field(cells[completion_col], completion_col, start),
            )
        start = last_read + 1


def _field(value: object, column: str, line: int) -> str:
    if value is None:
        raise ValueError(f"line {line}: no {column!r}")
    if not isinstance(value, str):
        raise ValueError(f"line {line}: {column!r} is not text")
    if not value.strip():
        raise ValueError(f"line {line}: empty {column!r}")
    return value.strip()


def _first_char(src: Path) -> str:
    with src.open("rb") as raw:
        return raw.read(4096).decode("utf-8-sig", "replace").lstrip()[:1]


def _decode(raw: bytes, number: int, where: str | None = None) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        raise ValueError(_at(number, where, "not valid UTF-8")) from None


def _at(number: int, where: str | None, why: str) -> str:
    return f"line {number}{f' of {where}' if where else ''}: {why}"


@contextmanager
def _atomic(path: Path) -> Iterator:
    """A text file that appears at `path` complete, or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as sink:
            yield sink
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
