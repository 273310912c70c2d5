"""Exact token counts without encoding every text: the hot loop of the dataset report.

Why it is exact: a byte-level BPE tokenizer (GPT-2 family, SmolLM2's) first splits out added
tokens, then cuts the text into pieces with one regex, then runs BPE inside each piece. So the
count of a text is the sum over its pieces, and a piece's count can be cached. Better still, the
regex never joins a space-separated word to the one before it, so a line of plain words counts as
Σ count(" " + word): `str.split` plus dict look-ups, with the Rust tokenizer only for new words.
Texts that are not that simple (tabs, double spaces, added tokens...) go through the regex
pieces, which is still exact. Other tokenizer kinds are encoded with the Rust tokenizer.
The equality with `tokenizer.encode` is a property test (tests/unit/test_dataprep_tokencount.py).
"""

import json
import re
from collections.abc import Callable

import regex

# The pre-tokenizer regex of byte-level BPE (`ByteLevel(use_regex=True)` in `tokenizers`).
_PIECES = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
# The same on ASCII text, for the standard `re` module: ~2.5x faster than `regex` with \p{...}.
_ASCII_PIECES = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", re.ASCII
)
_WS = regex.compile(r"\s")
# Every whitespace character (all of them lie below U+3001): one set look-up per boundary char.
WHITESPACE = frozenset(c for c in map(chr, range(0x3001)) if _WS.match(c))
_CACHE_LIMIT = 1 << 18  # entries per cache: bounds memory (~30 MB each) on endless vocabularies


class _NotSimple(Exception):
    """A text outside the words-and-newlines fast path."""


class _Counts(dict):
    """Token counts of strings, computed on first sight by `measure` (bounded by clearing)."""

    def __init__(self, measure: Callable[[str], int]):
        super().__init__()
        self.measure = measure

    def __missing__(self, key: str) -> int:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        value = self[key] = self.measure(key)
        return value


class _WordCounts(_Counts):
    """Counts of `prefix + word` for words without whitespace; anything else is not simple."""

    def __init__(self, pieces: _Counts, piece_sum: Callable[[str], int], prefix: str):
        def measure(word: str) -> int:
            # A word of letters (or ASCII digits) is one regex piece: skip the regex, ~4 µs.
            if word.isalpha() or (word.isascii() and word.isdigit()):
                return pieces[prefix + word]
            return piece_sum(prefix + word)

        super().__init__(measure)

    def __missing__(self, word: str) -> int:
        # str.split's whitespace includes all of the regex's \s (and \x1c-\x1f: those fall back).
        parts = word.split()
        if len(parts) != 1 or parts[0] != word:
            raise _NotSimple
        return super().__missing__(word)


def _splits_digits(vocab: dict[str, int]) -> bool:
    """Whether no token holds several digits (nor a space and a digit): BPE then leaves a number
    one token per digit, and its piece is counted without the model."""

    def several_digits(token: str) -> bool:
        body = token.removeprefix("Ġ")  # byte-level BPE writes the space as "Ġ"
        return len(token) > 1 and body.isascii() and body.isdigit()

    return not any(map(several_digits, vocab))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table that byte-level BPE vocabularies are written in."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def is_byte_level_bpe(config: dict) -> bool:
    """Whether a tokenizer.json is the kind whose counts can be summed over pieces and words."""
    pre = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    added_ok = all(
        not (t.get("lstrip") or t.get("rstrip") or t.get("single_word")) and not _WS.search(t["content"])
        for t in config.get("added_tokens", [])
    )
    return (
        config.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
        and model.get("type") == "BPE"
        and not model.get("dropout")
        and added_ok
    )


class TokenCounter:
    """`count(text)` equals `len(tokenizer.encode(text, add_special_tokens=False))`."""

    def __init__(self, backend) -> None:
        """`backend`: a `tokenizers.Tokenizer` (a transformers tokenizer's `backend_tokenizer`)."""
        self._encode = backend.encode
        added = sorted(backend.get_added_tokens_decoder().values(), key=lambda t: -len(t.content))
        self.added_tokens = tuple(t.content for t in added)
        self.fast = is_byte_level_bpe(json.loads(backend.to_str()))
        # Longest first: the added-vocabulary matcher prefers the longest token at a position.
        self._special = regex.compile("|".join(map(regex.escape, self.added_tokens))) if added else None
        self._added_firsts = tuple({t[0] for t in self.added_tokens})
        # New pieces go to the BPE model alone (the regex already split them): ~5x cheaper than encode.
        byte_chars = str.maketrans(_bytes_to_unicode())
        tokenize = backend.model.tokenize
        digits_split = _splits_digits(backend.get_vocab())

        def measure_piece(piece: str) -> int:
            number = piece[1:] if piece[:1] == " " else piece
            if digits_split and number.isascii() and number.isdigit():
                return len(piece)  # "Ġ" (the space) and one token per digit
            return len(tokenize(piece.encode().decode("latin-1").translate(byte_chars)))

        self._pieces = _Counts(measure_piece)
        self._first = _WordCounts(self._pieces, self._piece_sum, "")
        self._word = _WordCounts(self._pieces, self._piece_sum, " ")
        self._runs = _Counts(self._piece_sum)  # runs of newlines

    def _rust_count(self, text: str) -> int:
        return len(self._encode(text, add_special_tokens=False))

    def count(self, text: str) -> int:
        """Tokens of `text` tokenized on its own."""
        if not self.fast:
            return self._rust_count(text)
        if not self._may_hold_added(text):
            try:
                if "\n" in text:
                    return self._lines(text)
                return self._line(text) if text else 0
            except _NotSimple:
                pass
        return self._by_pieces(text)

    def _may_hold_added(self, text: str) -> bool:
        # A substring test per distinct first character ("<" for most vocabularies) before the regex.
        for first in self._added_firsts:
            if first in text:
                return bool(self._special.search(text))
        return False

    def _piece_sum(self, text: str) -> int:
        """Tokens of a text without added tokens: its regex pieces, each counted once."""
        pieces = (_ASCII_PIECES if text.isascii() else _PIECES).findall(text)
        return sum(map(self._pieces.__getitem__, pieces))

    def _by_pieces(self, text: str) -> int:
        chunks = self._special.split(text) if self._special else [text]
        return len(chunks) - 1 + sum(map(self._piece_sum, chunks))

    def _line(self, line: str) -> int:
        """A line of words separated by single spaces; raises _NotSimple otherwise."""
        words = iter(line.split(" "))
        first = next(words)
        # A leading single space belongs to the first word (" hello" is one piece).
        total = self._word[next(words, "")] if first == "" else self._first[first]
        return total + sum(map(self._word.__getitem__, words))

    def _lines(self, text: str) -> int:
        """Lines of words separated by newline runs; raises _NotSimple otherwise."""
        total, run = 0, 0
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if i:
                run += 1
            if not line:
                if i == len(lines) - 1:  # a final run is one piece (`\s+(?!\S)` at the end)
                    total += self._runs["\n" * run]
                continue
            if run:
                # Before a word, a run of k newlines is k-1 newlines + one; before " word" it is one piece.
                if line[0] == " ":
                    total += self._runs["\n" * run]
                else:
                    total += (self._runs["\n" * (run - 1)] if run > 1 else 0) + self._runs["\n"]
                run = 0
            total += self._line(line)
        return total

    def safe_cut(self, left: str, right: str) -> bool:
        """Whether count(left + right) == count(left) + count(right) for sure (a template seam)."""
        if not left or not right:
            return True
        check = self.seam_after(left)
        return check is None or check(right)

    def seam_after(self, left: str) -> Callable[[str], bool] | None:
        """A test of what may follow `left` without changing the counts; None: anything may.

        Built once per template literal, so that a content's seams cost a set look-up or two.
        """
        added = self.added_tokens
        if not self.fast:
            return lambda right: not right
        if not left or left.endswith(added):
            return None
        ws = WHITESPACE
        if left[-1] not in ws:  # a word or a symbol never takes in the whitespace after it
            return lambda right: not right or right[0] in ws or right.startswith(added)
        if left[-1] == " " or (len(left) > 1 and left[-2] in ws):
            # A space joins the next word; longer runs split depending on what follows.
            return lambda right: not right or right.startswith(added)

        def after_newline(right: str) -> bool:
            # "\n" + "word" and "\n" + " word" split at the seam; an added token ends the run's chunk.
            if not right or right.startswith(added):
                return True
            if right[0] == " ":
                return len(right) > 1 and right[1] not in ws and not right[1:].startswith(added)
            return right[0] not in ws

        return after_newline

    def seam_before(self, right: str) -> Callable[[str], bool] | None:
        """A test of what may precede `right` without changing the counts; None: anything may."""
        if self.fast and (not right or right.startswith(self.added_tokens)):
            return None
        return lambda left: self.safe_cut(left, right)
