"""A request's prompt as token ids, and the checks every engine makes before generating.

Chat messages go through the model's chat template (with the request's tools), raw text through
the tokenizer; a prompt that leaves no room in the context, or a logit bias outside the
vocabulary, is refused with the OpenAI parameter at fault. Any engine that takes token ids uses
these, so that the same request gives the same prompt and the same refusals on every engine.
"""

from pathlib import Path

import jinja2
from transformers import AutoConfig, GenerationConfig, PreTrainedTokenizerBase

from tunery_inference.engines.base import Prompt
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.sampling import GenerationParams


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, tools: list[dict] | None
) -> tuple[list[int], str]:
    """The prompt's token ids, and the parameter that holds it ("messages" or "prompt")."""
    if isinstance(prompt, str):
        if tools:
            raise RequestError("tools need chat messages", "tools")
        ids = tokenizer.encode(prompt)  # with the tokenizer's BOS, where it adds one
        if not ids:
            raise RequestError("the prompt is empty", "prompt")
        return ids, "prompt"
    return chat_prompt_ids(tokenizer, prompt, tools), "messages"


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict] | None
) -> list[int]:
    text = _render(tokenizer, messages, tools)
    if tools and text == _render(tokenizer, messages, None):
        raise RequestError(
            "this model's chat template does not support tools: they would not reach the model", "tools"
        )
    # As apply_chat_template tokenizes: the template writes the special tokens itself.
    return tokenizer.encode(text, add_special_tokens=False)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict] | None) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, tokenize=False
        )
    except jinja2.TemplateError as exc:  # e.g. roles that must alternate, raised by the template
        raise RequestError(f"the model's chat template refused the messages: {exc}", "messages") from None


def completion_room(n_prompt: int, context_length: int, param: str) -> int:
    """How many tokens the context leaves for the completion (at least one, or RequestError)."""
    room = context_length - n_prompt
    if room < 1:
        raise RequestError(
            f"the prompt has {n_prompt} tokens; the model's context is {context_length}",
            param,
            "context_length_exceeded",
        )
    return room


def check_logit_bias(params: GenerationParams, vocab_size: int) -> None:
    if params.logit_bias and max(params.logit_bias) >= vocab_size:
        raise RequestError(
            f"logit_bias names token {max(params.logit_bias)}; the vocabulary has {vocab_size}",
            "logit_bias",
        )


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> set[int]:
    """The tokens that end a sequence: chat models end a turn with a token (<|im_end|>) that the
    generation config may list beside the tokenizer's own eos."""
    try:
        generation = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json: what the model config says
        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir))
    eos = generation.eos_token_id
    return {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
