"""What an engine hands back: text deltas while it decodes, each choice when it ends, then the
whole completion. Any engine yields these, so the gRPC service maps one shape."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: bytes
    top_logprobs: list[TopLogprob]
    text_offset: int  # where the token's text starts in its choice's text


@dataclass(frozen=True)
class Delta:
    index: int  # the choice
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)  # the tokens this text completes


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: str  # "stop" (end of sequence, a stop string, a complete grammar) or "length"
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None  # when asked for


@dataclass(frozen=True)
class Completion:
    choices: list[Choice]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)

    @property
    def text(self) -> str:
        """The first choice's text (the only one, unless n > 1)."""
        return self.choices[0].text

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason
