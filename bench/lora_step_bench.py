"""LoRA training step on the real default model: loss on label positions only vs full logits.

Baseline: the usual causal-LM step (vocabulary logits at every position, then a masked
cross-entropy). Ours: the trainer's `score_labels` (output layer only where a label is). Same model,
same padded batches, alternated in one run. Last line: one JSON object with the figures and the ratio.

    .venv/bin/python bench/lora_step_bench.py [--steps 4] [--batch-size 8]
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunery_common.basemodels import ensure_base_model
from tunery_common.settings import CommonSettings
from tunery_trainer.data import IGNORE_INDEX, tokenize_example
from tunery_trainer.hyperparams import ALL_LINEAR
from tunery_trainer.label_scores import score_labels
from tunery_trainer.packing import make_batch

DATASET = Path(__file__).resolve().parents[1] / "examples" / "support_tickets" / "train.jsonl"


def full_logits_loss(model, batch):
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    targets = batch.labels[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    model_dir = ensure_base_model("smollm2-135m-instruct", CommonSettings().model_cache)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line)["messages"] for line in DATASET.read_text().splitlines()]
    examples = [tokenize_example(tokenizer, messages, 512) for messages in rows]
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=16, lora_alpha=32, target_modules=list(ALL_LINEAR)),
    )
    model.train()
    batches = [
        make_batch(examples[i * args.batch_size : (i + 1) * args.batch_size], packing=False, pad_id=0)
        for i in range(args.steps)
    ]
    tokens = sum(b.n_tokens for b in batches)
    timings = {"baseline": 0.0, "ours": 0.0}

    def ours_loss(batch):
        return -score_labels(model, batch).logprobs.sum()

    ours_loss(batches[0]).backward()  # warm-up
    model.zero_grad()
    for batch in batches:
        for name in ("baseline", "ours"):
            started = time.perf_counter()
            loss = full_logits_loss(model, batch) if name == "baseline" else ours_loss(batch)
            loss.backward()
            timings[name] += time.perf_counter() - started
            model.zero_grad()
    figures = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "tokens": tokens,
        "baseline_tokens_per_s": round(tokens / timings["baseline"], 1),
        "ours_tokens_per_s": round(tokens / timings["ours"], 1),
        "ratio": round(timings["baseline"] / timings["ours"], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
