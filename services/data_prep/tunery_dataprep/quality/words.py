"""The words of many texts at once, in numpy: shingles for MinHash and word identities for overlaps.

A text is normalised once in Python (`normalise`: casefold, ASCII punctuation and controls to
spaces, runs of spaces collapsed, all C-speed); everything per word then runs as a few numpy passes
over the bytes of the whole batch. A word is represented by the 8 bytes that start at it: for a
short word that is the word and the start of the next one (a bigram-like shingle), for a long
word its first 8 bytes. Hashing those windows costs no Python call per word, which is what keeps
sketching at tens of microseconds per example.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_SEPARATORS = bytes(c for c in range(128) if not chr(c).isalnum())  # ASCII punctuation, space, controls
_TO_SPACE = bytes.maketrans(_SEPARATORS, b" " * len(_SEPARATORS))
_WINDOW = 8
_PAD = b"\0" * _WINDOW  # after each text: no window reaches into the next one


def normalise(text_cf: str) -> bytes:
    """A casefolded text as UTF-8 words separated by single spaces, ASCII punctuation dropped."""
    return b" ".join(text_cf.encode("utf-8", "surrogatepass").translate(_TO_SPACE).split())


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every input bit moves every output bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@dataclass(frozen=True)
class Words:
    windows: (
        np.ndarray
    )  # (n_shingles, 8) uint8: bytes from each word start (and every 8th byte of long words)
    window_text: np.ndarray  # the text of each window
    prefixes: np.ndarray  # uint64 per word: its first (up to) 8 bytes, its identity for overlap counts
    text_of: np.ndarray  # the text of each word
    lengths: np.ndarray  # words per text

    def shingle_hashes(self) -> np.ndarray:
        """32-bit hashes of the windows: the shingles the MinHash signatures are taken over."""
        return (fmix64(self.windows.view("<u8").ravel()) >> np.uint64(32)).astype(np.uint32)


def split_words(texts: list[bytes]) -> Words:
    """The words of normalised texts, found in a few passes over their bytes.

    A word longer than 8 bytes gets a window every 8 bytes: a URL, or a sentence in a language
    written without spaces, is then compared on its whole length, not on its first 8 bytes.
    """
    joined = _PAD.join(texts) + _PAD
    buf = np.frombuffer(joined, dtype=np.uint8)
    is_char = buf > ord(" ")
    starts = np.flatnonzero(is_char & ~np.r_[False, is_char[:-1]])
    sizes = np.flatnonzero(is_char & ~np.r_[is_char[1:], False]) - starts + 1
    more = (sizes - 1) // _WINDOW  # windows after the first one, per word
    offsets = np.arange(more.sum()) - np.repeat(np.cumsum(more) - more, more) + 1
    at = np.sort(np.concatenate([starts, np.repeat(starts, more) + _WINDOW * offsets]))
    view = sliding_window_view(buf, _WINDOW)
    first = view[starts].view("<u8").ravel()  # little-endian: the word's first bytes are the low bits
    prefixes = first & (
        np.uint64(2**64 - 1) >> np.uint64(64) - 8 * np.minimum(sizes, _WINDOW).astype(np.uint64)
    )
    text_starts = np.cumsum([0] + [len(t) + _WINDOW for t in texts[:-1]])
    text_of = np.searchsorted(text_starts, starts, side="right") - 1
    return Words(
        windows=view[at],  # fancy indexing copies: contiguous rows
        window_text=np.searchsorted(text_starts, at, side="right") - 1,
        prefixes=prefixes,
        text_of=text_of,
        lengths=np.bincount(text_of, minlength=len(texts)),
    )


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's hash-based np.unique is ~25x slower on large uint64 arrays."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def shared_percent(answer: Words, prompt: Words) -> list[int]:
    """Per text pair: the share (0..100) of the answer's distinct words that its prompt contains."""

    def keyed(words: Words) -> np.ndarray:  # (text, word) as one sortable value, text in the top 24 bits
        word = fmix64(words.prefixes) >> np.uint64(24)
        return sorted_unique(word | words.text_of.astype(np.uint64) << np.uint64(40))

    a = keyed(answer)
    p = np.append(keyed(prompt), np.uint64(2**64 - 1))  # a sentinel: every search lands on a value
    found = p[np.searchsorted(p, a)] == a
    text_of = (a >> np.uint64(40)).astype(np.int64)
    n = len(answer.lengths)
    distinct = np.bincount(text_of, minlength=n)
    shared = np.bincount(text_of, weights=found, minlength=n)
    return (100 * shared // np.maximum(distinct, 1)).astype(np.int64).tolist()
