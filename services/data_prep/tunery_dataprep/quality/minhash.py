"""MinHash signatures of the shingle sets of many texts, computed in one numpy pass per batch.

The values are datasketch's "affine32" MinHash: each shingle hash is pre-mixed with the MurmurHash3
finalizer, then permuted as a*h+b mod 2^32 with datasketch's own parameters (seed 1), so a row equals
`datasketch.MinHash(num_perm, scheme="affine32", hashfunc=<shingle hash>).hashvalues` over the same
shingles (a unit test holds us to it). One numpy pass per batch instead of one MinHash object per
example is what keeps sketching cheap.
"""

import numpy as np
from datasketch import MinHash

NUM_PERM = 64
SEED = 1
MAX_SHINGLES = 256  # longer texts are sampled down to 128..256 shingles (see `signatures`)
_CHUNK = 32_768  # shingles per numpy pass: bounds the (shingles x permutations) matrix to ~8 MB

_A, _B = MinHash(num_perm=NUM_PERM, seed=SEED).permutations
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for a sketch of the empty set


def fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finalizer datasketch applies before its permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signatures(
    hashes: np.ndarray, text_of: np.ndarray, n_texts: int, *, num_perm: int = NUM_PERM
) -> np.ndarray:
    """MinHash values (n_texts x num_perm, uint32) of the shingle sets of many texts.

    `hashes` holds the 32-bit shingle hashes of all texts back to back, `text_of` the text of each.
    A text over MAX_SHINGLES shingles keeps those whose mixed hash is 0 modulo a power of
    two: two near-identical long texts keep the same sample, so their estimate stays unbiased.
    """
    mixed = fmix32(hashes)
    counts = np.bincount(text_of, minlength=n_texts)
    step = np.left_shift(1, np.ceil(np.log2(np.maximum(counts, 1) / MAX_SHINGLES)).clip(0).astype(np.int64))
    sampled = (mixed & (step[text_of] - 1).astype(np.uint32)) == 0
    mixed, text_of = mixed[sampled], text_of[sampled]

    out = np.full((n_texts, num_perm), _EMPTY, dtype=np.uint32)
    counts = np.bincount(text_of, minlength=n_texts)
    starts = np.cumsum(counts) - counts
    nonempty = np.flatnonzero(counts)  # empty texts keep the empty-set value
    chunk_of_text = starts[nonempty] // _CHUNK  # non-decreasing: each chunk is a run of texts
    a, b = _A[:num_perm], _B[:num_perm]
    for texts in np.split(nonempty, np.flatnonzero(np.diff(chunk_of_text)) + 1):
        if not len(texts):
            continue
        lo, hi = starts[texts[0]], starts[texts[-1]] + counts[texts[-1]]
        # permutations x shingles: the minimum then runs along contiguous memory (3x faster)
        permuted = np.multiply(a[:, None], mixed[None, lo:hi])
        permuted += b[:, None]
        out[texts] = np.minimum.reduceat(permuted, starts[texts] - lo, axis=1).T
    return out


def low_bits(sig: np.ndarray) -> np.ndarray:
    """b-bit MinHash (b=16): two different minima collide 1 in 65,536 times, far below the noise."""
    return (sig & np.uint32(0xFFFF)).astype(np.uint16)
