"""What to do about the warnings, and the advice every fine-tune needs."""

from collections.abc import Callable, Sequence

from tunery_dataprep.quality.base import CheckContext, QualityWarning, plural
from tunery_dataprep.quality.labels import find_label_sets
from tunery_dataprep.quality.sketch import ExampleSketch
from tunery_dataprep.quality.task import classification_minimum, detect_task

SPLIT = "tunery data split TRAIN.jsonl --validation-fraction 0.1 --seed 0 -o split/"
MIX = "tunery data mix TRAIN.jsonl --general GENERAL.jsonl --fraction 0.15 -o mixed.jsonl"


def _class_imbalance(w: QualityWarning) -> str:
    top = max(w.details["counts"].values())
    small = [label for label, count in w.details["counts"].items() if count * 5 < top]
    return (
        f"Balance the classes: add examples of {', '.join(map(repr, small[:5]))} (at least "
        f"{w.details['min_per_class']} each, ideally close to the largest class) or down-sample the largest; "
        f"weighting is no substitute for examples. `{SPLIT}` keeps the class shares equal in both files."
    )


def _too_few(w: QualityWarning) -> str:
    d = w.details
    missing = plural(d["minimum"] - d["n_examples"], "more example")
    text = f"Collect at least {missing} (minimum {d['minimum']}"
    if d.get("recommended"):
        text += f", recommended {d['recommended']}"
    if d.get("classes_below_minimum"):
        text += f"; at least {d['min_per_class']} for each class"
    return text + ")."


ADVICE: dict[str, Callable[[QualityWarning], str]] = {
    "class_imbalance": _class_imbalance,
    "too_few_examples": _too_few,
    "duplicate_examples": lambda w: (
        f"Remove the exact duplicates ({w.details['n_duplicates']}), keeping one copy of each."
    ),
    "near_duplicates": lambda w: (
        f"Drop or merge the near-duplicates ({w.details['n_near_duplicates']}): keep the best-written "
        "example of each group, or rewrite the others into genuinely different cases."
    ),
    "train_validation_overlap": lambda w: (
        f"Remove the leaked examples ({w.details['n_exact'] + w.details['n_near']}) from the validation "
        f"file, or re-split the data with `{SPLIT}`, which keeps near-identical prompts on one side."
    ),
    "inconsistent_labels": lambda w: (
        f"Review the groups of near-identical prompts with different labels ({w.details['n_groups']}): "
        "correct the labels, or put into the prompt what decides between them."
    ),
    "low_diversity": lambda w: (
        "Broaden the prompts: paraphrase the templates, vary length, tone and content, or better, "
        "collect real user requests; evaluate on prompts written by someone else."
    ),
    "missing_system_message": lambda w: (
        "Put the exact system prompt you will use in production into every example."
        if w.severity != "info"
        else "If production calls send a system prompt, add that same prompt to every example."
    ),
    "inconsistent_system_prompt": lambda w: "Use one system prompt, the production one, in every example.",
    "long_system_prompt": lambda w: (
        f"Shorten the system prompt: it is {w.details['share']:.0%} of the billed tokens"
        + (f" (${w.details['usd']:,.2f} of this run)" if w.details["usd"] else "")
        + ", and after fine-tuning a one-line instruction usually does; shorter prompts also cut the "
        "cost and latency of every production call."
    ),
    "truncated_examples": lambda w: (
        f"Shorten or split the examples over {w.details['context_length']} tokens "
        f"({w.details['n_truncated']}; e.g. keep the last turns of long conversations), or pick a model "
        "with a longer context."
    ),
    "factual_content": lambda w: (
        "Serve volatile facts (prices, dates, stock levels, schedules) with retrieval (RAG): put the "
        "retrieved facts into the prompts of your examples, so that the fine-tune learns to use them "
        "and the style of the answers, not the facts themselves, which will change."
    ),
}


def recommendations(
    train: Sequence[ExampleSketch],
    warnings: list[QualityWarning],
    ctx: CheckContext,
    *,
    valid: Sequence[ExampleSketch] | None = None,
) -> list[str]:
    """One action per warning code found, then what holds for every fine-tune of this size."""
    advice: list[str] = []
    for warning in warnings:
        text = ADVICE[warning.code](warning) if warning.code in ADVICE else None
        if text and text not in advice:
            advice.append(text)
    n = len(train)
    label_sets = find_label_sets(train)
    task = ctx.task or detect_task(train, label_sets=label_sets)
    codes = {w.code for w in warnings}
    if task == "classification" and label_sets and "too_few_examples" not in codes:
        need = classification_minimum(len(label_sets[0].counts))
        if n < need.recommended_from:
            advice.append(
                f"For {len(label_sets[0].counts)} classes {need.recommended} examples are recommended; "
                f"with {n}, expect errors on the rarer phrasings of each class."
            )
    if not valid:
        advice.append(
            f"Hold out 10-20% as a validation file to see overfitting: `{SPLIT}` (stratified by class, "
            "no duplicate on both sides)."
        )
    advice.append(
        "Measure before collecting more: fine-tune on 25%, 50% and 100% of the data and compare the "
        "validation metric. Gains grow roughly with the logarithm of the data size, so the next clear "
        f"step needs about 10x the data (~{10 * max(n, 1):,} examples): worth it only while that curve "
        "still rises; fixing the warnings above is cheaper."
    )
    advice.append(
        "If the model must keep its general abilities (chat, instructions outside this task), mix "
        f"10-20% general-purpose examples into the training file against catastrophic forgetting: `{MIX}`."
    )
    if ctx.task is None:
        advice.append(f"The checks assumed a {task} task from the answers; pass --task if it is another.")
    return advice
