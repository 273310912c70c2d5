"""LoRA training speed against transformers.Trainer, measured in the same run.

Both train the same model on the same synthetic chat examples (generated deterministically here:
sort a list of made-up words, whole examples 20..400 tokens long), with the same LoRA config
(r=16, alpha=32, dropout 0.05, every linear layer), batch size, epochs, learning rate (2e-4,
linear decay, no warm-up) and dtype (fp32 on CPU, bf16 on a GPU that has it).

- ours: `tunery_trainer.loop.train` (packed micro-batches, the output layer only at label
  positions), timed from its first step to its return (the epoch checkpoint and the adapter save
  included);
- baseline: `transformers.Trainer` over a PEFT model, `DataCollatorForSeq2Seq` padding to the
  longest example of each batch, labels -100 on the prompt, otherwise Trainer defaults; timed
  around `trainer.train()`.

Throughput counts trained (non-padding) tokens; with `--repeats` the two alternate and the best
time of each counts. The adapters of the last runs are scored on the same held-out examples by the
same code. The last line of output is one JSON object with the figures and `ratio`.

    .venv/bin/python bench/train_bench.py [--model tiny-random-llama] [--n-train 64] [--batch-size 8]
    .venv/bin/python bench/train_bench.py --model smollm2-135m-instruct --n-train 16 --repeats 2 [--threads 1]
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
)
from tunery_common.basemodels import ensure_base_model
from tunery_common.settings import CommonSettings
from tunery_trainer.data import TokenizedExample, TrainingData, tokenize_example
from tunery_trainer.hyperparams import ALL_LINEAR, Hyperparameters, resolve
from tunery_trainer.loop import TrainHooks, train
from tunery_trainer.model_setup import compute_dtype, training_device
from tunery_trainer.objectives import SupervisedObjective, evaluate
from tunery_trainer.packing import BatchBuilder

MIN_TOKENS, MAX_TOKENS = 20, 400
LEARNING_RATE = 2e-4  # ours: the base rate × learning_rate_multiplier 1
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": list(ALL_LINEAR)}
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "zen", "pa", "dor", "el", "fin", "gra"]


def synthetic_examples(tokenizer, n: int, seed: int, max_seq_len: int) -> list[TokenizedExample]:
    """n sorting tasks, each as long (in tokens, whole chat) as a length drawn from 20..400."""
    rng = random.Random(seed)
    vocabulary = sorted(
        {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(600)}
    )
    examples = []
    for _ in range(n):
        target = rng.randint(MIN_TOKENS, MAX_TOKENS)
        words = [rng.choice(vocabulary) for _ in range(MAX_TOKENS)]
        low, high = 1, MAX_TOKENS // 2  # the fewest words reaching the target length
        while low < high:
            middle = (low + high) // 2
            if len(_sorting_example(tokenizer, words[:middle], max_seq_len).input_ids) >= target:
                high = middle
            else:
                low = middle + 1
        examples.append(_sorting_example(tokenizer, words[:low], max_seq_len))
    return examples


def _sorting_example(tokenizer, words: list[str], max_seq_len: int) -> TokenizedExample:
    messages = [
        {"role": "system", "content": "Sort."},
        {"role": "user", "content": " ".join(words)},
        {"role": "assistant", "content": " ".join(sorted(words))},
    ]
    return tokenize_example(tokenizer, messages, max_seq_len)


def hf_dataset(examples: list[TokenizedExample]) -> list[dict]:
    return [
        {"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
        for e in examples
    ]


def run_ours(model_dir, data, args, work_dir) -> tuple[float, Path, int]:
    hp = resolve(
        Hyperparameters(
            n_epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate_multiplier=1,
            warmup_ratio=0.0,
            eval_every_steps=10**6,  # reports at epoch ends only
            lora=LORA,
            max_seq_len=args.max_seq_len,
        ),
        len(data.train),
    )
    first_step: list[float] = []

    def stop_requested():
        if not first_step:
            first_step.append(time.perf_counter())
        return None

    hooks = TrainHooks(lambda metrics: None, lambda *event: None, lambda checkpoint: None, stop_requested)
    result = train(model_dir, data, hp, args.seed, work_dir, hooks)
    seconds = time.perf_counter() - first_step[0]
    return seconds, result.adapter_dir, result.trained_tokens


def run_baseline(
    model_dir, tokenizer, train_set, args, device, dtype, work_dir
) -> tuple[float, torch.nn.Module]:
    torch.manual_seed(args.seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device),
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work_dir),
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=LEARNING_RATE,
            bf16=dtype == torch.bfloat16,
            use_cpu=device.type == "cpu",
            seed=args.seed,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        ),
        train_dataset=hf_dataset(train_set),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100),
    )
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, trainer.model


def valid_loss(model, valid_set, batch_size: int, device) -> float:
    objective = SupervisedObjective(BatchBuilder(packing=False, pad_id=0, device=device))
    stats = evaluate(model, objective, valid_set, batch_size)
    return objective.metrics(stats, "valid")["valid_loss"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-valid", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; the best counts")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads; 1 keeps a loaded machine from stalling both"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir = ensure_base_model(args.model, CommonSettings().model_cache)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_set = synthetic_examples(tokenizer, args.n_train, args.seed, args.max_seq_len)
    valid_set = synthetic_examples(tokenizer, args.n_valid, args.seed + 1, args.max_seq_len)
    lengths = [len(e.input_ids) for e in train_set]
    device = training_device()
    dtype = compute_dtype(device)
    print(
        f"{args.model} on {device} ({dtype}), {torch.get_num_threads()} threads; {len(train_set)} examples "
        f"of {min(lengths)}..{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"batch {args.batch_size}, {args.epochs} epoch(s)"
    )

    data = TrainingData(train=train_set, valid=[], n_truncated=0, n_skipped=0)
    seconds: dict[str, list[float]] = {"ours": [], "baseline": []}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        # Alternating order (ours first, then baseline first, ...) and the best time of each:
        # on a shared machine, load that comes and goes then hits both alike.
        for repeat in range(args.repeats):
            for name in ("ours", "baseline") if repeat % 2 == 0 else ("baseline", "ours"):
                work_dir = Path(tmp) / f"{name}-{repeat}"
                if name == "ours":
                    elapsed, adapter_dir, trained_tokens = run_ours(model_dir, data, args, work_dir)
                else:
                    elapsed, baseline_model = run_baseline(
                        model_dir, tokenizer, train_set, args, device, dtype, work_dir
                    )
                seconds[name].append(elapsed)
                load.append(os.getloadavg()[0])
                print(f"{name} run {repeat + 1}: {elapsed:.1f} s (load average {load[-1]:.2f})", flush=True)
        assert trained_tokens == args.epochs * sum(lengths)  # both train on the same tokens
        ours_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device), adapter_dir
        )
        ours_loss = valid_loss(ours_model, valid_set, args.batch_size, device)
        baseline_loss = valid_loss(baseline_model, valid_set, args.batch_size, device)
    ours_s, baseline_s = min(seconds["ours"]), min(seconds["baseline"])

    figures = {
        "model": args.model,
        "device": str(device),
        "n_train": len(train_set),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "trained_tokens": trained_tokens,
        "ours_tokens_per_s": round(trained_tokens / ours_s, 1),
        "baseline_tokens_per_s": round(trained_tokens / baseline_s, 1),
        "ratio": round(baseline_s / ours_s, 2),
        "ours_valid_loss": round(ours_loss, 4),
        "baseline_valid_loss": round(baseline_loss, 4),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in load],
    }
    print(f"ours:     {figures['ours_tokens_per_s']} trained tokens/s, validation loss {ours_loss:.4f}")
    print(
        f"baseline: {figures['baseline_tokens_per_s']} trained tokens/s, validation loss {baseline_loss:.4f}"
    )
    print(f"ratio:    {figures['ratio']}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
