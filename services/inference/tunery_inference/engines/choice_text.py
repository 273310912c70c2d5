"""One choice's text as its tokens are sampled: deltas for streaming, held back while they may
begin a stop string, then the finished Choice.

Push-driven, so that a decode loop over a batch feeds each row's tokens as they come and learns
from `done` when the row has ended (end of sequence, a stop string, a complete grammar).
"""

from transformers import PreTrainedTokenizerBase

from tunery_inference.engines.outputs import Choice, Delta, TokenLogprob, TopLogprob
from tunery_inference.engines.sampling import Sampled, SequenceSampler
from tunery_inference.engines.vocabulary import Vocabulary


class ChoiceText:
    def __init__(
        self,
        index: int,
        tokenizer: PreTrainedTokenizerBase,
        vocabulary: Vocabulary,
        eos_ids: set[int],
        sampler: SequenceSampler,
    ):
        self._index = index
        self._eos_ids = eos_ids
        self._sampler = sampler
        self._stops = [s for s in sampler.params.stop if s]
        self._detokenizer = Detokenizer(tokenizer)
        self._logprobs = _LogprobQueue(vocabulary) if sampler.params.logprobs else None
        self._text, self._sent, self._generated = "", 0, 0
        self._finish = "length"
        self._cut: int | None = None
        self.done = False

    def push(self, sampled: Sampled) -> list[Delta]:
        """The text that is now certain to be output (nothing while it may begin a stop string)."""
        self._generated += 1
        if sampled.token in self._eos_ids:
            self._finish, self.done = "stop", True
            return []
        if self._logprobs is not None:
            self._logprobs.push(sampled, len(self._text))
        self._text += self._detokenizer.push(sampled.token)
        self._cut = _find_stop(self._text, self._stops, self._sent)
        if self._cut is not None or self._sampler.complete:
            self.done = True
            return []
        # Hold back a tail that may be the start of a stop string: it must never reach the client.
        end = len(self._text) - _stop_prefix_len(self._text, self._stops)
        if end <= self._sent:
            return []
        logprobs = self._logprobs.take(end) if self._logprobs else []
        delta, self._sent = Delta(self._index, self._text[self._sent : end], logprobs), end
        return [delta]

    def finish(self) -> list[Delta | Choice]:
        """The rest of the text (if any), then the Choice."""
        text, cut, logprobs = self._text, self._cut, self._logprobs
        if cut is None:
            text += self._detokenizer.flush()
            cut = _find_stop(text, self._stops, self._sent)
        if cut is not None:
            text = text[:cut]
        finish = "stop" if cut is not None or self._sampler.complete else self._finish
        rest = logprobs.take(len(text) if cut is not None else None) if logprobs else []
        items: list[Delta | Choice] = []
        if len(text) > self._sent or rest:
            items.append(Delta(self._index, text[self._sent :], rest))
        items.append(Choice(self._index, text, finish, self._generated, logprobs.taken if logprobs else None))
        return items


class _LogprobQueue:
    """One choice's token logprobs, handed out with the text they belong to.

    A token goes out with the first delta that reaches the start of its text; a token whose text
    lies wholly after a stop string is not part of the output.
    """

    def __init__(self, vocabulary: Vocabulary):
        self._vocabulary = vocabulary
        self._pending: list[TokenLogprob] = []
        self.taken: list[TokenLogprob] = []

    def push(self, sampled: Sampled, text_offset: int) -> None:
        vocab = self._vocabulary
        self._pending.append(
            TokenLogprob(
                token=vocab.token_text(sampled.token),
                logprob=sampled.logprob,
                bytes=vocab.token_bytes(sampled.token),
                top_logprobs=[
                    TopLogprob(vocab.token_text(t), value, vocab.token_bytes(t)) for t, value in sampled.top
                ],
                text_offset=text_offset,
            )
        )

    def take(self, end: int | None) -> list[TokenLogprob]:
        """The pending tokens whose text starts before `end` (all of them for None)."""
        n = len(self._pending) if end is None else sum(1 for e in self._pending if e.text_offset < end)
        out, self._pending = self._pending[:n], self._pending[n:]
        self.taken += out
        return out


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    """Where the earliest stop string begins. Text before `start` was sent, so no match starts there."""
    found = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(found, default=None)


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """The length of the longest tail of `text` that a stop string begins with."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


class Detokenizer:
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
