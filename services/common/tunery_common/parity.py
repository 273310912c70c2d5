"""Train/serve parity: greedy completions of the same prompts from the PEFT-in-transformers
reference and from the serving engine, compared token by token.

A completion is its tokens' exact bytes, then END if it ended with an end-of-sequence token (a
completion cut by `max_tokens` has no END): two completions agree when these sequences are equal.
torch, transformers and peft are imported inside `reference_completions`: the gateway and a light
CLI install import this module without them.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

END = "<end of sequence>"  # a str: never equal to a token's bytes
Token = bytes | str


class PromptFileError(ValueError):
    """A line of a prompts file that holds no chat prompt; the message names the line."""


@dataclass(frozen=True)
class Agreement:
    """How two completions of one prompt agree."""

    exact: bool
    common_prefix: int  # leading tokens the two share
    longest: int  # tokens of the longer one

    @property
    def prefix_fraction(self) -> float:
        return self.common_prefix / self.longest if self.longest else 1.0


def agreement(reference: Sequence[Token], served: Sequence[Token]) -> Agreement:
    common = 0
    for ours, theirs in zip(reference, served, strict=False):
        if ours != theirs:
            break
        common += 1
    return Agreement(list(reference) == list(served), common, max(len(reference), len(served)))


def summary(agreements: Sequence[Agreement]) -> dict[str, float]:
    """The exact-match rate of the completions and their mean common-prefix fraction."""
    n = len(agreements)
    return {
        "exact_match_rate": sum(a.exact for a in agreements) / n if n else 0.0,
        "mean_common_prefix": sum(a.prefix_fraction for a in agreements) / n if n else 0.0,
    }


def prompts_of(text: str, source: str, n: int) -> list[list[dict]]:
    """The first `n` chat prompts of a JSONL file: the messages before an example's last assistant
    message (its reference answer), or the `input` messages of a preference example."""
    prompts = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if len(prompts) == n:
            break
        if not raw.strip():
            continue
        try:
            example = json.loads(raw)
            messages = example["input"]["messages"] if "input" in example else example["messages"]
            if messages and messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            assert messages and all(isinstance(m["content"], str) for m in messages)
        except (ValueError, KeyError, TypeError, IndexError, AssertionError):
            raise PromptFileError(
                f"{source}:{line_no}: not a chat example (`messages`, or a preference example's `input`)"
            ) from None
        prompts.append(messages)
    if not prompts:
        raise PromptFileError(f"{source} holds no example")
    return prompts


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[Token]


def reference_completions(
    base_dir: Path, adapter_dir: Path, prompts: list[list[dict]], max_tokens: int, on_done=None
) -> list[Completion]:
    """Greedy completions of plain transformers `generate` over base + adapter (PEFT), in float32,
    each prompt rendered and stopped as the serving engine renders and stops it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tunery_inference.engines.vocabulary import Vocabulary

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    configured = base.generation_config.eos_token_id
    eos_ids = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {
        None
    }
    vocabulary = Vocabulary(tokenizer, base.get_output_embeddings().out_features, eos_ids)
    completions = []
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer.encode(text, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=sorted(eos_ids),
                pad_token_id=sorted(eos_ids)[0],
            )
        ids = out[0, len(prompt) :].tolist()
        ended = bool(ids) and ids[-1] in eos_ids
        ids = ids[:-1] if ended else ids
        tokens: list[Token] = [vocabulary.token_bytes(i) for i in ids] + ([END] if ended else [])
        completions.append(Completion(tokenizer.decode(ids, skip_special_tokens=True), tokens))
        if on_done is not None:
            on_done()
    return completions
