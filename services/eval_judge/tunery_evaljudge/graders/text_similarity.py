"""`text_similarity`: BLEU (sacrebleu) or ROUGE (rouge-score) between an answer and a reference.

Scores are in [0, 1] (BLEU divided by 100, ROUGE as F-measure); the sample passes at
`pass_threshold` or above. ROUGE tokenises on Unicode word characters, lowercased: rouge-score's
own tokenizer keeps only ASCII letters and digits, which would score any other script zero.
"""

import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

import sacrebleu
from pydantic import Field, field_validator
from rouge_score import rouge_scorer

from tunery_evaljudge.graders.base import Grader, GradeResult, TemplateStr, clip
from tunery_evaljudge.templates import Sample, SampleFieldError, render

ROUGE_TYPES = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_3": "rouge3", "rouge_4": "rouge4"}
ROUGE_TYPES |= {"rouge_5": "rouge5", "rouge_l": "rougeL"}
SUPPORTED_METRICS = ("bleu", *ROUGE_TYPES)
# OpenAI metrics that need more than these libraries (embeddings, a fuzzy matcher, WordNet).
UNSUPPORTED_METRICS = ("cosine", "fuzzy_match", "gleu", "meteor")


class _WordTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@cache
def _rouge(metric: str) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer([ROUGE_TYPES[metric]], tokenizer=_WordTokenizer())


def similarity(metric: str, text: str, reference: str) -> float:
    if metric == "bleu":
        return sacrebleu.sentence_bleu(text, [reference]).score / 100
    score = _rouge(metric).score(target=reference, prediction=text)
    return score[ROUGE_TYPES[metric]].fmeasure


class TextSimilarityGrader(Grader):
    type: Literal["text_similarity"]
    input: TemplateStr = "{{sample.output_text}}"
    reference: TemplateStr
    evaluation_metric: str
    pass_threshold: float = Field(ge=0, le=1)

    @field_validator("evaluation_metric")
    @classmethod
    def _supported(cls, metric: str) -> str:
        if metric in SUPPORTED_METRICS:
            return metric
        supported = ", ".join(SUPPORTED_METRICS)
        if metric in UNSUPPORTED_METRICS:
            raise ValueError(f"{metric!r} is not supported here; use one of {supported}")
        raise ValueError(f"unknown metric {metric!r}; use one of {supported}")

    def grade(self, item: Mapping[str, Any], sample: Sample) -> GradeResult:
        try:
            text = render(self.input, item, sample)
            reference = render(self.reference, item, sample)
        except SampleFieldError as exc:
            return self.failed(str(exc))
        score = similarity(self.evaluation_metric, text, reference)
        passed = score >= self.pass_threshold
        return self.result(score, passed, metric=self.evaluation_metric, reference=clip(reference))
