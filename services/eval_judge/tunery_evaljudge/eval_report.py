"""A run's HTML report: self-contained (inline SVG and CSS, no script, nothing fetched).

Pass rate per criterion as bars (with the baseline's and the delta's 95% CI when a comparison is
given), the confusion matrix of each classification criterion, latency percentiles, and the judge
that graded when a criterion used one.
"""

from html import escape
from typing import Any

from tunery_common.records import EvalRecord, EvalRunRecord

BAR_W = 360
ROW_H = 28

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:60rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}.muted{color:#777}svg text{font-size:12px;font-family:system-ui,sans-serif}
"""


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _bars(rows: list[tuple[str, float | None, tuple[float, float] | None, float | None]]) -> str:
    """Horizontal bars of rates in [0, 1]; an optional CI whisker and a baseline tick per row."""
    height = ROW_H * len(rows) + 10
    parts = [f'<svg width="{BAR_W + 260}" height="{height}" role="img">']
    for i, (label, rate, ci, baseline) in enumerate(rows):
        y = 5 + i * ROW_H
        parts.append(f'<text x="0" y="{y + 16}">{escape(label[:28])}</text>')
        parts.append(f'<rect x="200" y="{y}" width="{BAR_W}" height="20" fill="#eee"/>')
        if rate is not None:
            parts.append(f'<rect x="200" y="{y}" width="{rate * BAR_W:.1f}" height="20" fill="#4a7fd4"/>')
        if baseline is not None:
            x = 200 + baseline * BAR_W
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 2}" y2="{y + 22}" stroke="#d44" stroke-width="2"/>'
            )
        if ci is not None:
            low, high = (200 + max(0.0, v) * BAR_W for v in ci)
            parts.append(f'<line x1="{low:.1f}" x2="{high:.1f}" y1="{y + 10}" y2="{y + 10}" stroke="#222"/>')
        parts.append(f'<text x="{200 + BAR_W + 8}" y="{y + 16}">{_pct(rate)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _confusion(report: dict[str, Any]) -> str:
    labels, matrix = report["labels"], report["confusion_matrix"]
    peak = max((v for row in matrix for v in row), default=0) or 1
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = []
    for label, row in zip(labels, matrix, strict=False):
        cells = "".join(f'<td style="background:rgba(74,127,212,{v / peak:.2f})">{v}</td>' for v in row)
        rows.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return (
        f"<p>accuracy {_pct(report['accuracy'])}, macro-F1 {report['macro_f1']:.3f} "
        '<span class="muted">(rows: expected, columns: predicted)</span></p>'
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def _latency(latency: dict[str, Any]) -> str:
    values = [("p50", latency.get("p50_ms")), ("p95", latency.get("p95_ms")), ("max", latency.get("max_ms"))]
    peak = max((v for _, v in values if v), default=0) or 1
    parts = [f'<svg width="{BAR_W + 260}" height="{ROW_H * 3 + 10}" role="img">']
    for i, (name, value) in enumerate(values):
        y = 5 + i * ROW_H
        width = 0 if value is None else value / peak * BAR_W
        label = "–" if value is None else f"{value:.0f} ms"
        parts.append(f'<text x="0" y="{y + 16}">{name}</text>')
        parts.append(f'<rect x="200" y="{y}" width="{width:.1f}" height="20" fill="#7a5"/>')
        parts.append(f'<text x="{200 + BAR_W + 8}" y="{y + 16}">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _judge(judge: dict[str, Any]) -> str:
    """Who graded: a judged score means nothing without the judge that gave it."""
    models = ", ".join(f"<code>{escape(m)}</code>" for m in judge.get("models") or []) or "a model"
    return f"<p>Judge: {models} at <code>{escape(judge.get('base_url', ''))}</code>.</p>"


def render_report(
    eval_record: EvalRecord, run: EvalRunRecord, comparison: dict[str, Any] | None = None
) -> str:
    aggregates = run.aggregates or {}
    criteria = aggregates.get("criteria") or {}
    compared = {c["testing_criteria"]: c for c in (comparison or {}).get("testing_criteria", [])}
    title = f"{eval_record.name}: {run.name}"
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Run <code>{escape(run.id)}</code> of eval <code>{escape(eval_record.id)}</code>, "
        f"model <code>{escape(run.model or 'pre-filled samples')}</code>, status {escape(run.status)}.</p>",
    ]
    if run.result_counts:
        counts = run.result_counts
        body.append(
            f"<p>{counts['total']} items: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['errored']} errored.</p>"
        )
    if criteria:
        rows = []
        for name, summary in criteria.items():
            pass_fail = (compared.get(name) or {}).get("pass_fail")
            ci = baseline = None
            if pass_fail:
                baseline = pass_fail["baseline_rate"]
                rate = pass_fail["candidate_rate"]
                ci = (
                    rate - (pass_fail["delta"] - pass_fail["ci_low"]),
                    rate + (pass_fail["ci_high"] - pass_fail["delta"]),
                )
            rows.append((name, summary.get("pass_rate"), ci, baseline))
        body.append("<h2>Pass rate per criterion</h2>" + _bars(rows))
        if compared:
            body.append(
                '<p class="muted">Red tick: the baseline run; whisker: the 95% CI of the difference, around '
                "this run's rate.</p><table><tr><th>criterion</th><th>baseline</th><th>this run</th>"
                "<th>delta</th><th>95% CI</th><th>p</th><th>verdict</th></tr>"
            )
            for name, entry in compared.items():
                pf = entry["pass_fail"]
                body.append(
                    f"<tr><td>{escape(name)}</td><td>{_pct(pf['baseline_rate'])}</td><td>{_pct(pf['candidate_rate'])}</td>"
                    f"<td>{pf['delta']:+.1%}</td><td>[{pf['ci_low']:+.1%}, {pf['ci_high']:+.1%}]</td>"
                    f"<td>{pf['p_value']:.3g}</td><td>{escape(pf['verdict'])}</td></tr>"
                )
            body.append("</table>")
        for name, summary in criteria.items():
            if summary.get("classification"):
                body.append(
                    f"<h2>Confusion matrix: {escape(name)}</h2>" + _confusion(summary["classification"])
                )
    if aggregates.get("judge"):
        body.append(_judge(aggregates["judge"]))
    if aggregates.get("latency", {}).get("n"):
        body.append("<h2>Latency</h2>" + _latency(aggregates["latency"]))
    if aggregates.get("tokens"):
        tokens = aggregates["tokens"]
        body.append(
            f"<p>Tokens: {tokens['prompt_tokens']} prompt, {tokens['completion_tokens']} completion.</p>"
        )
    if aggregates.get("format_compliance_rate") is not None:
        body.append(f"<p>Format compliance: {_pct(aggregates['format_compliance_rate'])}.</p>")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
