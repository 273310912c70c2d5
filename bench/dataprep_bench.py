"""Dataset report speed against the cookbook's way, measured in the same run.

Generates N support-ticket chat examples (about 2% broken in the cookbook's error classes, a few
duplicates), then times
  - the full report: `build_report` (format checks, token counts, quality checks, costs);
  - the baseline: the cookbook's checks in plain Python (`json.loads` per line, its loops) and
    token counts with the same tokenizer one example at a time (`apply_chat_template(...,
    tokenize=True)` per example, the assistant contents encoded one by one).
Both must agree on the token total (printed). The last line of output is one JSON object.

    .venv/bin/python bench/dataprep_bench.py [--n 100000] [--rss 100000,1000000]

`--rss` instead measures the report's peak RSS in a fresh process per size.
"""

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

MODEL = "smollm2-135m-instruct"
SYSTEMS = [
    "You are the support assistant of Acme Cloud. Answer briefly and politely.",
    "You are a helpful assistant for Acme's billing team. Be precise; never promise refunds.",
    "Classify the ticket and reply to the customer in two sentences.",
]
TOPICS = [
    "invoice",
    "refund",
    "password",
    "login",
    "shipping",
    "upgrade",
    "downgrade",
    "API key",
    "webhook",
    "export",
]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "ta",
    "vo",
    "shi",
    "zen",
    "pa",
    "dor",
    "el",
    "fin",
    "gra",
    "qu",
    "bex",
]


def _vocabulary(rng: random.Random, n: int = 4000) -> list[str]:
    common = (
        "the a to and of my is it for in on i you we can not with this that be have your please "
        "help account order when why how what was will do get after before again today yesterday "
        "thanks hello hi error page app plan card payment charged twice cannot see working".split()
    )
    made = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(n)}
    return common + sorted(made)


def _sentence(rng: random.Random, vocab: list[str], words: int) -> str:
    # Zipf-like: a few words are frequent, most are rare, as in real text.
    picked = [vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] for _ in range(words)]
    text = " ".join(picked)
    return text[0].upper() + text[1:] + rng.choice([".", "?", "!", "."])


def example(rng: random.Random, vocab: list[str], i: int) -> dict:
    topic = rng.choice(TOPICS)
    user = " ".join(_sentence(rng, vocab, rng.randint(6, 18)) for _ in range(rng.randint(1, 3)))
    user = f"Ticket #{10000 + i}: my {topic} {user}"
    answer = " ".join(_sentence(rng, vocab, rng.randint(5, 14)) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.2:  # some answers are lists over several lines
        answer += "\n\nSteps:\n" + "\n".join(f"{k}. {_sentence(rng, vocab, 5)}" for k in range(1, 4))
    messages = [
        {"role": "system", "content": rng.choice(SYSTEMS)},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    if rng.random() < 0.15:
        messages += [
            {"role": "user", "content": _sentence(rng, vocab, 8)},
            {"role": "assistant", "content": _sentence(rng, vocab, 10)},
        ]
    return {"messages": messages}


def _broken(rng: random.Random, ex: dict) -> str:
    kind = rng.randrange(6)
    messages = ex["messages"]
    if kind == 0:
        messages[1]["role"] = "customer"
    elif kind == 1:
        del messages[2]["content"]
    elif kind == 2:
        messages[1]["extra"] = 1
    elif kind == 3:
        ex["messages"] = messages[:2]
    elif kind == 4:
        return json.dumps(ex)[:-5]  # cut short: not JSON
    else:
        return json.dumps({"prompt": "x", "completion": "y"})
    return json.dumps(ex)


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    with open(path, "w") as f:
        previous = None
        for i in range(n):
            ex = example(rng, vocab, i)
            r = rng.random()
            if r < 0.02:
                line = _broken(rng, ex)
            elif r < 0.03 and previous:
                line = previous  # an exact duplicate
            else:
                line = json.dumps(ex)
            previous = line
            f.write(line + "\n")


def baseline(path: Path, tokenizer, max_tokens: int = 16_385) -> dict:
    """The cookbook's format checks and statistics, tokens counted one example at a time."""
    dataset, invalid_json = [], 0
    with open(path) as f:
        for line in f:
            try:
                dataset.append(json.loads(line))
            except json.JSONDecodeError:
                invalid_json += 1
    format_errors: dict[str, int] = defaultdict(int)
    valid = []
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        errors_before = sum(format_errors.values())
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1
        if sum(format_errors.values()) == errors_before:
            valid.append(messages)

    n_missing_system = n_missing_user = 0
    lengths, assistant_lengths = [], []
    for messages in valid:
        if not any(m["role"] == "system" for m in messages):
            n_missing_system += 1
        if not any(m["role"] == "user" for m in messages):
            n_missing_user += 1
        lengths.append(len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)))
        assistant_lengths.append(
            sum(
                len(tokenizer.encode(m["content"], add_special_tokens=False))
                for m in messages
                if m["role"] == "assistant"
            )
        )
    n = len(valid)
    n_epochs = 3
    if n * 3 < 100:
        n_epochs = min(25, 100 // n)
    elif n * 3 > 25_000:
        n_epochs = max(1, 25_000 // n)
    billing = sum(min(max_tokens, length) for length in lengths)
    return {
        "n_examples": len(dataset) + invalid_json,
        "format_errors": dict(format_errors),
        "invalid_json": invalid_json,
        "total_tokens": sum(lengths),
        "assistant_tokens": sum(assistant_lengths),
        "median_tokens": statistics.median(lengths),
        "n_too_long": sum(length > max_tokens for length in lengths),
        "n_missing_system": n_missing_system,
        "n_missing_user": n_missing_user,
        "n_epochs": n_epochs,
        "billing_tokens": billing,
    }


def run_speed(n: int, workers: int) -> dict:
    from tunery_dataprep.report import build_report, idle_cpus
    from tunery_dataprep.settings import DataPrepSettings
    from tunery_dataprep.tokens import load_tokenizer

    settings = DataPrepSettings(workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        generate(path, n)
        tokenizer = load_tokenizer(MODEL, settings.model_cache)
        build_report(
            path.read_bytes()[:200_000], model=MODEL, settings=settings
        )  # load tokenizer, warm caches

        # The processes the report will use: one per idle CPU unless told, for files big enough.
        big = path.stat().st_size >= settings.parallel_from_mb << 20
        used = (workers or idle_cpus()) if big else 1
        start = time.perf_counter()
        report = build_report(path, model=MODEL, settings=settings)
        report_s = time.perf_counter() - start
        print(
            f"report:   {n / report_s:10.0f} examples/s ({report_s:.1f} s, {used} process(es); "
            f"{report.n_errors} errors, {len(report.warnings)} warnings, {report.tokens.total} tokens)"
        )

        start = time.perf_counter()
        base = baseline(path, tokenizer)
        baseline_s = time.perf_counter() - start
        print(
            f"baseline: {n / baseline_s:10.0f} examples/s ({baseline_s:.1f} s; {base['total_tokens']} tokens)"
        )
    if base["total_tokens"] != report.tokens.total:
        print(f"TOKEN TOTALS DIFFER: report {report.tokens.total}, baseline {base['total_tokens']}")
    # The cookbook's classes (and the lines it could not read) counted alike on both sides.
    expected = {**base["format_errors"], "invalid_json": base["invalid_json"]}
    errors_equal = {k: v for k, v in report.format_errors.items() if k in expected} == expected
    if not errors_equal:
        print(f"ERROR COUNTS DIFFER: report {report.format_errors}, baseline {expected}")
    ratio = baseline_s / report_s
    print(f"ratio:    {ratio:.1f}x")
    return {
        "n": n,
        "report_examples_per_s": round(n / report_s, 1),
        "baseline_examples_per_s": round(n / baseline_s, 1),
        "report_s": round(report_s, 2),
        "report_processes": used,
        "baseline_s": round(baseline_s, 2),
        "tokens_equal": base["total_tokens"] == report.tokens.total,
        "error_counts_equal": errors_equal,
        "total_tokens": report.tokens.total,
        "n_errors": report.n_errors,
        "warnings": sorted({w.code for w in report.warnings}),
        "ratio": round(ratio, 2),
    }


def _rss_child(path: str) -> None:
    """Runs in a fresh process: peak RSS after imports and the tokenizer, then after the report."""
    from tunery_dataprep.report import build_report
    from tunery_dataprep.settings import DataPrepSettings

    settings = DataPrepSettings()
    build_report(
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}\n' * 20,
        model=MODEL,
        settings=settings,
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    report = build_report(Path(path), model=MODEL, settings=settings)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest worker process
    figures = {
        "rss_before_mb": before // 1024,
        "rss_peak_mb": after // 1024,
        "worker_rss_peak_mb": workers // 1024,
        "seconds": round(seconds, 1),
        "n_valid": report.n_valid_examples,
    }
    print(json.dumps(figures))


def run_rss(sizes: list[int]) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"train-{n}.jsonl"
            generate(path, n)
            out = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            figures["file_mb"] = round(path.stat().st_size / 2**20, 1)
            print(
                f"{n:>9} examples ({figures['file_mb']} MB): peak RSS {figures['rss_peak_mb']} MB "
                f"(after start-up {figures['rss_before_mb']} MB), report in {figures['seconds']} s"
            )
            results[str(n)] = figures
            path.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="examples to generate")
    parser.add_argument("--workers", type=int, default=0, help="report processes (0: one per idle CPU)")
    parser.add_argument("--rss", help="comma-separated sizes: measure peak RSS instead of speed")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(args.rss_child)
        return
    result = run_rss([int(s) for s in args.rss.split(",")]) if args.rss else run_speed(args.n, args.workers)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
