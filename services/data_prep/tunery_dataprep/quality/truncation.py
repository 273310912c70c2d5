"""`truncated_examples`: examples longer than the model's context lose their oldest tokens."""

from collections.abc import Sequence

from tunery_dataprep.quality.base import CheckContext, QualityWarning, lines_text, make_warning, plural
from tunery_dataprep.quality.sketch import ExampleSketch


def check_truncated(train: Sequence[ExampleSketch], ctx: CheckContext) -> list[QualityWarning]:
    long = [s for s in train if s.truncated]
    if not long:
        return []
    lines = [s.line for s in long]
    longest = max(s.n_tokens for s in long)
    return [
        make_warning(
            "truncated_examples",
            "warning",
            f"{plural(len(long), 'example', 'is')} longer than the {ctx.context_length}-token context "
            f"(up to {longest} tokens, {lines_text(lines)}): training drops their oldest tokens, so the "
            "model sees answers without the context that led to them. Shorten or split them.",
            lines,
            n_truncated=len(long),
            max_tokens=longest,
            context_length=ctx.context_length,
        )
    ]
