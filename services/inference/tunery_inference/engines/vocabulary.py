"""A model's tokens as exact bytes, and the tokenizer view that grammar matching needs.

Both come from llguidance's reading of the Hugging Face tokenizer, which knows how each tokenizer
family spells bytes (byte-level BPE, SentencePiece byte fallback): a token may hold part of a
UTF-8 character, and `tokenizer.decode([id])` would turn it into U+FFFD.
"""

import threading

from llguidance import LLTokenizer
from llguidance.hf import from_tokenizer
from transformers import PreTrainedTokenizerBase


class Vocabulary:
    """Built on first use (about a second for a 50k vocabulary), then shared by every request."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, n_vocab: int, eos_ids: set[int]):
        self._tokenizer = tokenizer
        self._n_vocab = n_vocab
        self._eos_ids = sorted(eos_ids)
        self._built: LLTokenizer | None = None
        self._lock = threading.Lock()

    @property
    def llg(self) -> LLTokenizer:
        with self._lock:
            if self._built is None:
                # The model's logits may be wider than the tokenizer (padded vocabularies): llguidance
                # then masks the extra ids. Every end-of-turn token may end a constrained output.
                self._built = from_tokenizer(self._tokenizer, n_vocab=self._n_vocab, eos_token=self._eos_ids)
            return self._built

    def token_bytes(self, token_id: int) -> bytes:
        return self.llg.decode_bytes([token_id])

    def token_text(self, token_id: int) -> str:
        """The token as text; bytes that are not a whole UTF-8 character are written `\\xNN`."""
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")
