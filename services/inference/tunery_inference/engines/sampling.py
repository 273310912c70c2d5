"""Generation parameters and the sampling of one sequence's next token.

`SequenceSampler.step` takes one sequence's logits and its own state (random generator, counts
of the tokens it generated, grammar matcher), so that a decode loop over one sequence or over a
batch of them uses it the same way, row by row.

Order of the logit changes, as OpenAI documents them: logit bias, then presence and frequency
penalties, then the grammar mask. Logprobs are reported on that distribution, before temperature
and top-p, which only change how the token is drawn from it.
"""

import hashlib
from dataclasses import dataclass, field

import torch

from tunery_inference.engines.constrained import GrammarConstraint
from tunery_inference.engines.errors import RequestError

MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class ResponseFormat:
    type: str = "text"  # text | json_object | json_schema
    json_schema: str | None = None  # the schema as JSON text (json_schema only)


@dataclass
class GenerationParams:
    max_tokens: int = 256  # clamped to the model's context minus the prompt
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None  # makes sampling reproducible
    stop: list[str] = field(default_factory=list)
    n: int = 1  # choices, each sampled on its own
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives reported per token, with logprobs
    response_format: ResponseFormat = field(default_factory=ResponseFormat)

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, "max_tokens", f"must be at least 1, not {self.max_tokens}"),
            (self.temperature >= 0, "temperature", f"must not be negative, not {self.temperature}"),
            (0 < self.top_p <= 1, "top_p", f"must be in (0, 1], not {self.top_p}"),
            (1 <= self.n <= MAX_CHOICES, "n", f"must be between 1 and {MAX_CHOICES}, not {self.n}"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty", "must be between -2 and 2"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty", "must be between -2 and 2"),
            (
                0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                "top_logprobs",
                f"must be between 0 and {MAX_TOP_LOGPROBS}, not {self.top_logprobs}",
            ),
            (
                all(-100 <= bias <= 100 for bias in self.logit_bias.values()),
                "logit_bias",
                "biases must be between -100 and 100",
            ),
            (
                all(token >= 0 for token in self.logit_bias),
                "logit_bias",
                "token ids must not be negative",
            ),
        ]
        for ok, param, message in checks:
            if not ok:
                raise RequestError(f"{param} {message}", param)

    def choice_seed(self, index: int) -> int | None:
        """Choice 0 samples with the seed itself (n=1 and n>1 agree on it); the others with seeds
        derived from it, so that choices differ and each is reproducible."""
        if self.seed is None or index == 0:
            return self.seed
        digest = hashlib.sha256(f"{self.seed}:{index}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1  # torch seeds are below 2**63


@dataclass(frozen=True)
class Sampled:
    token: int
    logprob: float | None = None  # with params.logprobs
    top: list[tuple[int, float]] = field(default_factory=list)  # (token, logprob), most likely first


class SequenceSampler:
    def __init__(
        self,
        params: GenerationParams,
        seed: int | None,
        device: str | torch.device,
        constraint: GrammarConstraint | None = None,
    ):
        self.params = params
        self.constraint = constraint
        self._generator = torch.Generator(device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self._counts: torch.Tensor | None = None  # how often each token was generated so far

    @property
    def complete(self) -> bool:
        """The grammar admits nothing more: the sequence is done."""
        return self.constraint is not None and self.constraint.complete

    def step(self, logits: torch.Tensor) -> Sampled:
        """The next token of this sequence, from its row of logits (vocabulary-sized, 1-D)."""
        logits = self._adjusted(logits)
        token = self._draw(logits)
        sampled = self._report(logits, token)
        self._accept(token)
        return sampled

    def _adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        params = self.params
        penalised = bool(params.presence_penalty or params.frequency_penalty)
        if not (params.logit_bias or penalised or self.constraint is not None):
            return logits.float()
        # A copy: the row may be shared (the n choices of a prompt start from the same logits).
        logits = logits.float().clone()
        if params.logit_bias:
            ids = torch.tensor(list(params.logit_bias), device=logits.device)
            logits[ids] += torch.tensor(list(params.logit_bias.values()), device=logits.device)
        if penalised:
            if self._counts is None:
                self._counts = torch.zeros_like(logits)
            logits -= self._counts * params.frequency_penalty
            logits -= (self._counts > 0).float() * params.presence_penalty
        if self.constraint is not None:
            self.constraint.mask(logits)
        return logits

    def _draw(self, logits: torch.Tensor) -> int:
        if self.params.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.params.temperature, dim=-1)
        if self.params.top_p < 1:
            # Nucleus sampling: keep the most likely tokens until their mass reaches top_p.
            sorted_probs, order = probs.sort(descending=True)
            probs[order[sorted_probs.cumsum(-1) - sorted_probs >= self.params.top_p]] = 0
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def _report(self, logits: torch.Tensor, token: int) -> Sampled:
        if not self.params.logprobs:
            return Sampled(token)
        logprobs = torch.log_softmax(logits, dim=-1)
        top: list[tuple[int, float]] = []
        if self.params.top_logprobs:
            values, ids = logprobs.topk(self.params.top_logprobs)
            # Masked tokens (-inf) are no alternative: a constrained step may allow fewer than asked.
            top = [(int(i), float(v)) for v, i in zip(values, ids, strict=True) if v > float("-inf")]
        return Sampled(token, float(logprobs[token]), top)

    def _accept(self, token: int) -> None:
        if self._counts is not None:
            self._counts[token] += 1
        if self.constraint is not None:
            self.constraint.accept(token)
