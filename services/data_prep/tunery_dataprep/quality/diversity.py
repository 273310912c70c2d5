"""`low_diversity`: prompts that are a few templates with the blanks filled in.

Prompts are grouped at an estimated Jaccard similarity of 0.5 (about half their word shingles in
common, e.g. "What is the price of the blue widget?" / "... of the red gadget?"), chains included.
A fine-tune on such data learns the templates, and users who phrase things differently get the
base model's behaviour.
"""

from collections.abc import Sequence

import numpy as np

from tunery_dataprep.quality.base import QualityWarning, make_warning
from tunery_dataprep.quality.lsh import SAME_TEMPLATE, cluster_ids
from tunery_dataprep.quality.sketch import ExampleSketch, signature_matrix

MIN_EXAMPLES = 20  # below this, a count of templates says nothing
MAX_TEMPLATE_RATIO = 0.2  # templates / examples: at most this and each template repeats 5+ times on average
SHOWN_TEMPLATES = 3


def check_low_diversity(train: Sequence[ExampleSketch]) -> list[QualityWarning]:
    n = len(train)
    if n < MIN_EXAMPLES:
        return []
    ids = cluster_ids(signature_matrix(train), SAME_TEMPLATE)
    sizes = np.bincount(ids)  # connected components are numbered 0..k-1
    if len(sizes) > MAX_TEMPLATE_RATIO * n:
        return []
    largest = np.argsort(sizes, kind="stable")[::-1][:SHOWN_TEMPLATES]
    top = [[train[row].line for row in np.flatnonzero(ids == template)] for template in largest]
    return [
        make_warning(
            "low_diversity",
            "warning",
            f"The {n} prompts follow only about {len(sizes)} templates (prompts sharing half their "
            f"wording); the largest covers {len(top[0])} examples ({len(top[0]) / n:.0%}), e.g. lines "
            f"{', '.join(map(str, top[0][:3]))}. Vary the wording, length and content of the prompts the "
            "way real users would.",
            top[0],
            n_templates=len(sizes),
            templates_per_example=round(len(sizes) / n, 3),
            largest_templates=[{"n_examples": len(lines), "lines": lines[:5]} for lines in top],
        )
    ]
