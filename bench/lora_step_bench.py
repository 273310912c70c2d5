"""LoRA training step on the real default model: loss on label positions only vs full logits.

Baseline: the usual causal-LM step (vocabulary logits at every position, then a masked
cross-entropy). Ours: the trainer's `_loss_sum` (output layer only where a label is). Same model,
same batches, alternated in one run. Last line: one JSON object with the figures and the ratio.

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
from tunery_trainer.loop import LORA_TARGET_MODULES, _collate, _loss_sum

DATASET = Path(__file__).resolve().parents[1] / "examples" / "support_tickets" / "train.jsonl"


def full_logits_loss(model, batch):
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    logits = logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
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
        LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGET_MODULES)),
    )
    model.train()
    batches = [
        _collate(examples[i * args.batch_size : (i + 1) * args.batch_size], 0, torch.device("cpu"))
        for i in range(args.steps)
    ]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    timings = {"baseline": 0.0, "ours": 0.0}
    _loss_sum(model, batches[0])[0].backward()  # warm-up
    model.zero_grad()
    for batch in batches:
        for name in ("baseline", "ours"):
            started = time.perf_counter()
            loss = full_logits_loss(model, batch) if name == "baseline" else _loss_sum(model, batch)[0]
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
