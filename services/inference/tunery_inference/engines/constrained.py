"""Grammar-constrained decoding: JSON (any object, or one that a JSON Schema describes).

A response format is compiled once into an llguidance grammar; each sequence then gets its own
matcher, which masks the tokens that cannot continue a valid output before every sampling step
and ends the sequence when the grammar is complete. So even a poor model's output parses.
"""

import json
import logging
import threading
from collections import OrderedDict

import torch
from llguidance import LLMatcher

from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.vocabulary import Vocabulary

log = logging.getLogger(__name__)

SCHEMA_PARAM = "response_format.json_schema.schema"
ANY_OBJECT = '{"type": "object"}'
# Whitespace between JSON tokens: a space, or a line break and indentation, as models write JSON.
# Bounded, so that a model cannot spend its tokens on whitespace (unbounded runs are a known
# failure of grammar-constrained JSON with weak models).
_WHITESPACE = r"(\x20|\n[\x20\t]{0,32})?"
_JSON_OPTIONS = {"whitespace_pattern": _WHITESPACE}
_CACHED_GRAMMARS = 64


class GrammarConstraint:
    """One sequence's matcher: masks logits, follows the sampled tokens, says when it is complete."""

    def __init__(self, matcher: LLMatcher):
        self._matcher = matcher

    def mask(self, logits: torch.Tensor) -> None:
        """Sets the logits of the tokens that cannot come next to -inf, in place."""
        allowed = torch.frombuffer(bytearray(self._matcher.compute_logit_bias()), dtype=torch.uint8)
        n = min(len(allowed), logits.shape[-1])
        logits[:n].masked_fill_(allowed[:n].to(logits.device) == 0, float("-inf"))
        logits[n:] = float("-inf")

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            # Only a token outside the mask gets here: a bug, not a bad request.
            raise RuntimeError(f"grammar refused token {token}: {self._matcher.get_error()}")

    @property
    def complete(self) -> bool:
        """Nothing but the end of the sequence can follow."""
        return self._matcher.is_stopped()


class Grammars:
    """Compiles response formats for one tokenizer; a schema sent again reuses its grammar."""

    def __init__(self, vocabulary: Vocabulary):
        self._vocabulary = vocabulary
        self._compiled: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def constraint(self, kind: str, schema: str | None = None) -> GrammarConstraint | None:
        """A fresh constraint for one sequence; None for free text. Raises RequestError for a
        schema that does not compile, naming what is wrong with it."""
        schema = _schema_of(kind, schema)
        if schema is None:
            return None
        return GrammarConstraint(LLMatcher(self._vocabulary.llg, self._grammar(schema)))

    def enforced_schema(self, kind: str, schema: str | None = None) -> str | None:
        """For an engine that constrains decoding itself with llguidance (vLLM's guidance
        backend): the schema, checked as `constraint` checks it, with this module's JSON options
        written into it (llguidance reads them from `x-guidance`), so that both engines enforce
        the same grammar. None for free text."""
        schema = _schema_of(kind, schema)
        if schema is None:
            return None
        self._grammar(schema)  # raises RequestError for a schema that cannot be enforced
        value = json.loads(schema)
        if isinstance(value, dict):
            value["x-guidance"] = {**value.get("x-guidance", {}), **_JSON_OPTIONS}
        return json.dumps(value)

    def _grammar(self, schema: str) -> str:
        with self._lock:
            if schema in self._compiled:
                self._compiled.move_to_end(schema)
                return self._compiled[schema]
        try:
            json.loads(schema)
            grammar = LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)
        except ValueError as exc:
            raise RequestError(f"the JSON schema is not valid JSON: {exc}", SCHEMA_PARAM) from None
        error = LLMatcher.validate_grammar(grammar, self._vocabulary.llg)
        if error:
            raise RequestError(f"the JSON schema cannot be enforced: {error.strip()}", SCHEMA_PARAM)
        with self._lock:
            self._compiled[schema] = grammar
            while len(self._compiled) > _CACHED_GRAMMARS:
                self._compiled.popitem(last=False)
        return grammar


def _schema_of(kind: str, schema: str | None) -> str | None:
    """The JSON schema a response format asks for; None for free text."""
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind != "json_schema":
        raise RequestError(f"unknown response_format type {kind!r}", "response_format.type")
    if not schema:
        raise RequestError("response_format json_schema needs a schema", SCHEMA_PARAM)
    return schema
