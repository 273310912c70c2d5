"""The system prompt: `missing_system_message`, `inconsistent_system_prompt`, `long_system_prompt`."""

from collections import Counter
from collections.abc import Sequence

from tunery_dataprep.quality.base import CheckContext, QualityWarning, lines_text, make_warning, plural
from tunery_dataprep.quality.sketch import ExampleSketch

DOMINANT_SHARE = 0.8  # one system prompt used this often and the others look like slips
LONG_SHARE = 1 / 3  # of the billed tokens spent on the system prompt
LONG_TOKENS = 100  # mean system-prompt tokens: shorter ones are not worth shortening


def check_system_messages(train: Sequence[ExampleSketch]) -> list[QualityWarning]:
    return [*_missing(train), *_inconsistent(train)]


def _missing(train: Sequence[ExampleSketch]) -> list[QualityWarning]:
    missing = [s.line for s in train if not s.system_hash]
    if not missing:
        return []
    if len(missing) == len(train):
        return [
            make_warning(
                "missing_system_message",
                "info",
                "No example has a system message. That is fine if the model will be called without one; "
                "otherwise add the system prompt you will use in production to every example.",
            )
        ]
    return [
        make_warning(
            "missing_system_message",
            "warning",
            f"{len(missing)} of {len(train)} examples have no system message while the others do "
            f"({lines_text(missing)}): the model learns two behaviours. Give every example the one "
            "you will send in production.",
            missing,
            n_missing=len(missing),
        )
    ]


def _inconsistent(train: Sequence[ExampleSketch]) -> list[QualityWarning]:
    """One system prompt nearly everywhere and a few variants: the variants are likely mistakes."""
    counts = Counter(s.system_hash for s in train if s.system_hash)
    if len(counts) < 2:
        return []
    dominant, uses = counts.most_common(1)[0]
    with_system = sum(counts.values())
    if uses < DOMINANT_SHARE * with_system:
        return []  # several prompts by design (personas, per-example context)
    variants = [s.line for s in train if s.system_hash and s.system_hash != dominant]
    first_use = next(s.line for s in train if s.system_hash == dominant)
    return [
        make_warning(
            "inconsistent_system_prompt",
            "warning",
            f"{plural(len(variants), 'example', 'use')} another system prompt than the {uses} others (as "
            f"on line {first_use}), in {plural(len(counts) - 1, 'variant')} ({lines_text(variants)}): "
            "unless that is deliberate, use the production system prompt everywhere.",
            variants,
            n_variants=len(counts) - 1,
            n_dominant=uses,
        )
    ]


def check_long_system_prompt(train: Sequence[ExampleSketch], ctx: CheckContext) -> list[QualityWarning]:
    """A long system prompt is billed on every example in every epoch: say what it costs."""
    system = sum(s.n_system_tokens for s in train)
    total = sum(s.n_tokens for s in train)
    if not total or system < LONG_SHARE * total or system < LONG_TOKENS * len(train):
        return []
    n = len(train)
    usd, usd_total = (tokens * ctx.n_epochs * ctx.training_usd_per_token for tokens in (system, total))
    cost = f" Over {ctx.n_epochs} epochs it costs ${usd:,.2f} of ${usd_total:,.2f}." if usd_total else ""
    return [
        make_warning(
            "long_system_prompt",
            "warning",
            f"The system prompt takes {system / total:.0%} of the billed tokens: about {system // n} of "
            f"{total // n} tokens per example, against {sum(s.n_assistant_tokens for s in train) // n} "
            f"for the answers the model learns from.{cost} A fine-tuned model needs far fewer "
            "instructions: shorten it, here and in production.",
            system_tokens=system,
            share=round(system / total, 3),
            usd=round(usd, 4),
            n_epochs=ctx.n_epochs,
        )
    ]
