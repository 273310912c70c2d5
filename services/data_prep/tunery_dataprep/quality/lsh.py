"""Groups of near-identical texts from their MinHash signatures (locality-sensitive hashing).

The banding is datasketch's MinHashLSH scheme: a signature is cut into b bands of r values and two
texts become candidates when one band matches, which happens with probability 1 - (1 - J^r)^b
for Jaccard similarity J. It runs as one sort per band over the whole
signature matrix: datasketch's per-example `insert` + `query` cost ~35 µs an example on our
2-core machine, seconds at 100k, where the report's whole budget is a few seconds.
Each candidate is checked against the first member of its bucket (the estimates must reach the
thresholds), and groups are the connected components of the checked pairs: chains of
near-identical texts end up together, and no bucket is ever compared pairwise.
"""

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tunery_dataprep.quality.sketch import ANSWER_SIG, PROMPT_SIG
from tunery_dataprep.quality.words import sorted_unique

_VERIFY_CHUNK = 200_000  # candidate pairs compared per numpy pass


@dataclass(frozen=True)
class Banding:
    bands: tuple[tuple[int, ...], ...]  # the signature columns each band reads (2 or 4 of them)
    checks: tuple[tuple[slice, float], ...]  # (columns, threshold): what a candidate pair must reach


def _bands(columns: list[int], rows: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(columns[i : i + rows]) for i in range(0, len(columns), rows))


_PROMPT = list(range(PROMPT_SIG.start, PROMPT_SIG.stop))
_ANSWER = list(range(ANSWER_SIG.start, ANSWER_SIG.stop))
# Prompts at J >= 0.8: 16 bands of 4; a J=0.8 pair becomes a candidate with p=0.9998, J=0.5 with 0.64.
NEAR_IDENTICAL = Banding(_bands(_PROMPT, 4), ((PROMPT_SIG, 0.8),))
# Prompts of one template, J >= 0.5: 16 bands of 2 (32 values); a J=0.5 pair is a candidate with p=0.99.
SAME_TEMPLATE = Banding(_bands(_PROMPT[:32], 2), ((PROMPT_SIG, 0.5),))
# Whole examples, prompt and answer both at J >= 0.8: each band reads 2 prompt and 2 answer values,
# so a bucket never gathers one prompt's different answers; a (0.9, 0.9) pair is a candidate with p=1-1e-7.
NEAR_IDENTICAL_EXAMPLE = Banding(
    tuple(p + a for p, a in zip(_bands(_PROMPT[:32], 2), _bands(_ANSWER, 2), strict=True)),
    ((PROMPT_SIG, 0.8), (ANSWER_SIG, 0.8)),
)

_KEY_DTYPES = {2: np.uint32, 4: np.uint64}  # a band's 16-bit values read as one integer


def _candidate_pairs(sig: np.ndarray, banding: Banding) -> tuple[np.ndarray, np.ndarray]:
    """(member, first member of its bucket) for every bucket of every band."""
    n = len(sig)
    members, firsts = [], []
    for columns in banding.bands:
        keys = np.ascontiguousarray(sig[:, columns]).view(_KEY_DTYPES[len(columns)]).ravel()
        order = np.argsort(keys)
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, n])
        first = np.repeat(np.minimum.reduceat(order, starts), sizes)  # the bucket's lowest row
        others = order != first
        members.append(order[others])
        firsts.append(first[others])
    pairs = sorted_unique(np.concatenate(members).astype(np.int64) * n + np.concatenate(firsts))
    return pairs // n, pairs % n


def _verified(sig: np.ndarray, a: np.ndarray, b: np.ndarray, banding: Banding) -> np.ndarray:
    keep = np.ones(len(a), dtype=bool)
    for lo in range(0, len(a), _VERIFY_CHUNK):
        hi = lo + _VERIFY_CHUNK
        for columns, threshold in banding.checks:
            width = columns.stop - columns.start
            equal = (sig[a[lo:hi], columns] == sig[b[lo:hi], columns]).sum(axis=1)
            keep[lo:hi] &= equal >= np.ceil(threshold * width - 1e-9)
    return keep


def cluster_ids(sig: np.ndarray, banding: Banding) -> np.ndarray:
    """A group id (0..k-1) per signature row: rows linked by pairs that pass the checks share one."""
    n = len(sig)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = _candidate_pairs(sig, banding)
    keep = _verified(sig, a, b, banding)
    graph = coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (a[keep], b[keep])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def groups(ids: np.ndarray) -> list[np.ndarray]:
    """The rows of each group of two or more, rows ascending, groups in the order of their first row."""
    if not len(ids):
        return []
    rows = np.flatnonzero(np.bincount(ids)[ids] >= 2)  # singletons, most rows, never reach Python
    rows = rows[np.argsort(ids[rows], kind="stable")]
    found = np.split(rows, np.flatnonzero(np.diff(ids[rows])) + 1) if len(rows) else []
    return sorted(found, key=lambda members: members[0])
