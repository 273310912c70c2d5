"""Token counts with the target model's own tokenizer and chat template."""

from functools import lru_cache
from pathlib import Path

from tunery_common.basemodels import tokenizer_dir

from tunery_dataprep.schema import AssistantMessage, ChatExample, text_of


@lru_cache(maxsize=4)
def load_tokenizer(model: str, cache_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir(model, cache_dir))


def count_tokens(tokenizer, examples: list[ChatExample]) -> tuple[int, int]:
    """(total tokens of the rendered conversations, tokens of assistant answers)."""
    if not examples:
        return 0, 0
    conversations = [
        [{"role": m.role, "content": text_of(getattr(m, "content", None))} for m in ex.messages]
        for ex in examples
    ]
    rendered = tokenizer.apply_chat_template(conversations, tokenize=False)
    total = sum(len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"])
    answers = [text_of(m.content) for ex in examples for m in ex.messages if isinstance(m, AssistantMessage)]
    assistant = (
        sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]) if answers else 0
    )
    return total, assistant
