"""The report's figures, as Plotly figures built from run files only.

Training curves put steps on the x axis, one panel per quantity the run logged (a panel and its
`eval/` twin share an axis); a statistic logged under two names is drawn once. Evaluation figures
compare the models of one eval.json: scores per principle, toxicity distributions from samples.jsonl
(binned here, so that the counts can be checked), and win/tie/loss against the baseline.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vietnamese_ai.metric_names import PPO_RECIPE_NAMES
from vietnamese_ai.report.runs import Evaluation, TrainingRun

# (panel title, metric keys drawn in it); each key's `eval/` twin joins the same panel, dashed.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss", "lm_loss", "nll", "reward_mse")),
    ("reward margin", ("rewards/margins", "margin")),
    ("preference accuracy", ("rewards/accuracies", "accuracy")),
    ("rewards chosen / rejected", ("rewards/chosen", "rewards/rejected")),
    ("reward", ("reward", "mean_reward", "ppo/returns/mean")),
    ("KL", ("kl", "objective/kl")),
    ("KL coefficient", ("kl_coef", "objective/kl_coef")),
    ("clip fraction", ("clip_ratio", "ppo/policy/clipfrac", "ppo/val/clipfrac")),
    ("value error", ("ppo/val/error",)),
    ("completion length", ("completions/mean_length",)),
    ("learning rate", ("learning_rate",)),
)
TOXICITY_BINS = 20
PALETTE = ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=12)


def model_colors(names: list[str]) -> dict[str, str]:
    """The baseline grey, the others in order: the same model keeps its colour in every figure."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, y=0.98, yanchor="top"), height=height,
                      margin=dict(l=50, r=20, t=80, b=40), font=FONT,
                      template="plotly_white", legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom",
                                                           traceorder="normal"))
    return fig


def _our_name(key: str) -> str | None:
    """Our name for a statistic logged under the original recipe's name (`eval/` kept), else None."""
    prefix = "eval/" if key.startswith("eval/") else ""
    ours = PPO_RECIPE_NAMES.get(key.removeprefix(prefix))
    return prefix + ours if ours else None


def histogram_counts(values: list[float], bins: int = TOXICITY_BINS) -> list[int]:
    """Counts of values in `bins` equal bins over [0, 1]: [k/bins, (k+1)/bins), the last one closed, so
    that 1.0 (the most toxic answer) is counted inside the axis. Values outside [0, 1] count in the
    bin at that end.

    >>> histogram_counts([0.0, 0.05, 0.5, 0.97, 1.0], bins=4)
    [2, 0, 1, 2]
    """
    counts = [0] * bins
    for value in values:
        # The small tolerance puts a value that is an edge up to float rounding (0.15 * 20) in the bin it starts.
        counts[min(max(int(value * bins + 1e-9), 0), bins - 1)] += 1
    return counts


def training_figure(run: TrainingRun) -> go.Figure | None:
    """One panel per logged quantity, x = optimizer step."""
    logged = {k for record in run.metrics for k, v in record.items() if isinstance(v, (int, float))}
    logged -= {k for k in logged if _our_name(k) in logged}   # the same number under our name: drawn once
    panels = []
    for title, keys in PANELS:
        present = [k for key in keys for k in (key, f"eval/{key}") if k in logged]
        if present:
            panels.append((title, present))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    color = lambda j: PALETTE[(j + 1) % len(PALETTE)]  # noqa: E731
    # A panel with several series names each in its colour: one legend for a grid would not say which panel.
    titles = [title if len(keys) == 1 else "  ".join(f"<span style='color:{color(j)}'>{k}</span>" for j, k in enumerate(keys))
              for title, keys in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=0.5 / rows)
    for i, (_, keys) in enumerate(panels):
        for j, key in enumerate(keys):
            points = [(r["step"], r[key]) for r in run.metrics
                      if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r]
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=key, mode="lines+markers",
                                     marker=dict(size=4), line=dict(dash="dash" if key.startswith("eval/") else "solid",
                                                                    color=color(j)),
                                     showlegend=False, hovertemplate=f"{key}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
        fig.update_xaxes(title_text="step", row=i // cols + 1, col=i % cols + 1)
    label = run.name if run.method in (run.name, "training") else f"{run.name} ({run.method})"
    return _layout(fig, f"{label}: training curves", 120 + 260 * rows)


def principles_figure(evaluation: Evaluation) -> go.Figure:
    """Overall score and each principle's mean score, one bar per model."""
    models = evaluation.report["models"]
    colors = model_colors(list(models))
    principles = sorted({p for m in models.values() for p in m.get("per_principle", {})})
    fig = go.Figure()
    for name, m in models.items():
        values = [m.get("score_mean")] + [m.get("per_principle", {}).get(p) for p in principles]
        fig.add_trace(go.Bar(name=name, x=["overall"] + principles, y=values, marker_color=colors[name],
                             text=[f"{v:.3f}" if v is not None else "" for v in values], textposition="outside"))
    fig.update_layout(barmode="group", yaxis=dict(title="mean score", range=[0, 1.12]))
    return _layout(fig, f"{evaluation.name}: mean score, overall and per principle (higher is better)", 420)


def toxicity_figure(evaluation: Evaluation) -> go.Figure | None:
    """Overlaid histograms of each answer's toxicity, from samples.jsonl, binned by histogram_counts."""
    rows = [r for r in evaluation.samples if isinstance(r.get("toxicity"), dict)]
    if not rows:
        return None
    models = evaluation.report["models"]
    colors = model_colors(list(models))
    fig = go.Figure()
    for name, m in models.items():
        values = [r["toxicity"][name] for r in rows if isinstance(r["toxicity"].get(name), (int, float))]
        label = f"{name}: mean {m.get('toxicity_mean', float('nan')):.3f} ± {m.get('toxicity_std', float('nan')):.3f}"
        if "toxicity_improvement_pct" in m:
            pct = m["toxicity_improvement_pct"]
            label += f" ({abs(pct):.0f}% {'lower' if pct >= 0 else 'higher'} than {evaluation.report.get('baseline')})"
        width = 1 / TOXICITY_BINS
        ranges = [f"[{k * width:.2f}, {(k + 1) * width:.2f}{']' if k == TOXICITY_BINS - 1 else ')'}"
                  for k in range(TOXICITY_BINS)]
        fig.add_trace(go.Bar(x=[(k + 0.5) * width for k in range(TOXICITY_BINS)], y=histogram_counts(values),
                             width=[width] * TOXICITY_BINS, name=label, marker_color=colors[name], opacity=0.6,
                             customdata=ranges, hovertemplate=f"{name}: %{{y}} answers in %{{customdata}}<extra></extra>"))
    fig.update_layout(barmode="overlay", xaxis=dict(title="toxicity of an answer (0 = clean, 1 = toxic)", range=[0, 1]),
                      yaxis=dict(title="answers"))
    return _layout(fig, f"{evaluation.name}: toxicity distribution (lower is better)", 400)


def wins_figure(evaluation: Evaluation) -> go.Figure | None:
    """Win / tie / loss of each model against the baseline, answer k against answer k."""
    pairs = evaluation.report.get("pairs") or {}
    if not pairs:
        return None
    labels = [name.replace("_vs_", " vs ") for name in pairs]
    fig = go.Figure()
    for key, title, color in (("win_rate", "win", "#2ca02c"), ("tie_rate", "tie", "#c7c7c7"), ("loss_rate", "loss", "#d62728")):
        values = [100 * p.get(key, 0.0) for p in pairs.values()]
        fig.add_trace(go.Bar(name=title, y=labels, x=values, orientation="h", marker_color=color,
                             text=[f"{title} {v:.0f}%" for v in values], textposition="inside"))
    fig.update_layout(barmode="stack", xaxis=dict(title="% of answers", range=[0, 100]))
    return _layout(fig, f"{evaluation.name}: win / tie / loss against {evaluation.report.get('baseline')}",
                   160 + 60 * len(pairs))


# ---- safety suites (eval.json models.<name>.suites.<suite>.<language>) ------------------------------

def suite_languages(evaluation: Evaluation, suite: str) -> list[str]:
    """The languages any model was measured in on `suite`, in the file's order."""
    seen: dict[str, None] = {}
    for m in evaluation.report["models"].values():
        seen.update(dict.fromkeys((m.get("suites") or {}).get(suite) or {}))
    return list(seen)


def _whiskers(values: list[float | None], intervals: list[list[float] | None]) -> dict | None:
    """Asymmetric error bars from [low, high] intervals (none where a value or interval is missing).

    >>> _whiskers([0.5, 0.2], [[0.25, 0.75], None])["array"], _whiskers([0.5], [None])
    ([0.25, 0], None)
    """
    if not any(intervals):
        return None
    plus, minus = [], []
    for value, ci in zip(values, intervals):
        has = value is not None and ci is not None
        plus.append(ci[1] - value if has else 0)
        minus.append(value - ci[0] if has else 0)
    return dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1.2, width=3)


def suite_bars(evaluation: Evaluation, suite: str, group: str, key: str, title: str, axis: str,
               percent: bool) -> go.Figure | None:
    """Before/after bars of one number per category (or jailbreak template), one panel per language.

    `group` is the breakdown in eval.json (`categories`, `templates`), `key` the number in each entry
    (`rate`, `bias_ambiguous`); an entry's `ci95` becomes whiskers. None when no model has the breakdown.
    """
    models = evaluation.report["models"]
    languages = [lang for lang in suite_languages(evaluation, suite)
                 if any(((m.get("suites") or {}).get(suite, {}).get(lang) or {}).get(group) for m in models.values())]
    if not languages:
        return None
    colors, scale = model_colors(list(models)), 100 if percent else 1
    cols = min(2, len(languages))
    rows = math.ceil(len(languages) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"language: {lang}" for lang in languages],
                        horizontal_spacing=0.08, vertical_spacing=0.5 / rows)
    for i, lang in enumerate(languages):
        parts = {name: ((m.get("suites") or {}).get(suite, {}).get(lang) or {}).get(group) or {} for name, m in models.items()}
        names = list(dict.fromkeys(g for part in parts.values() for g in part))
        for name, part in parts.items():
            values = [part.get(g, {}).get(key) for g in names]
            values = [None if v is None else scale * v for v in values]
            intervals = [[scale * c for c in part[g]["ci95"]] if "ci95" in part.get(g, {}) else None for g in names]
            fig.add_trace(go.Bar(name=name, x=[g.replace("_", " ") for g in names], y=values, marker_color=colors[name],
                                 error_y=_whiskers(values, intervals), legendgroup=name, showlegend=i == 0,
                                 hovertemplate=f"{name}: %{{y:.3g}}<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
        fig.update_yaxes(title_text=axis, row=i // cols + 1, col=i % cols + 1,
                         range=[0, 104] if percent else [-1.04, 1.04])
    fig.update_layout(barmode="group")
    return _layout(fig, f"{evaluation.name}: {title}", 120 + 300 * rows)


def tradeoff_figure(evaluation: Evaluation) -> go.Figure | None:
    """Over-refusal (x) against refusal of jailbreaks, 1 - attack success rate (y): a point per model and
    language, with both 95% intervals. Refusing everything puts a model top right, refusing nothing
    bottom left; the good corner is top left."""
    models = evaluation.report["models"]
    colors = model_colors(list(models))
    fig, symbols = go.Figure(), ("circle", "square", "diamond", "triangle-up")
    languages = [lang for lang in suite_languages(evaluation, "jailbreak") if lang in suite_languages(evaluation, "over_refusal")]
    for j, lang in enumerate(languages):
        for name, m in models.items():
            suites = m.get("suites") or {}
            jail, over = suites.get("jailbreak", {}).get(lang), suites.get("over_refusal", {}).get(lang)
            if not isinstance((jail or {}).get("attack_success_rate"), (int, float)) or \
                    not isinstance((over or {}).get("over_refusal_rate"), (int, float)):
                continue
            x, y = 100 * over["over_refusal_rate"], 100 * (1 - jail["attack_success_rate"])
            x_ci = [100 * c for c in over["ci95"]] if "ci95" in over else None
            y_ci = [100 * (1 - c) for c in reversed(jail["ci95"])] if "ci95" in jail else None
            fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"{name} ({lang})",
                                     marker=dict(size=11, color=colors[name], symbol=symbols[j % len(symbols)]),
                                     error_x=_whiskers([x], [x_ci]), error_y=_whiskers([y], [y_ci]),
                                     hovertemplate=f"{name} {lang}: over-refusal %{{x:.1f}}%, "
                                                   f"refuses jailbreaks %{{y:.1f}}%<extra></extra>"))
    if not fig.data:
        return None
    for x, y, text in ((0, 100, "ideal"), (100, 100, "refuses everything"), (0, 0, "refuses nothing")):
        fig.add_annotation(x=x, y=y, text=text, showarrow=False, font=dict(color="#6b7280"),
                           xanchor="left" if x == 0 else "right", yanchor="top" if y == 100 else "bottom")
    fig.update_layout(xaxis=dict(title="over-refusal: safe prompts refused (%)", range=[-3, 103]),
                      yaxis=dict(title="jailbreaks refused = 1 − attack success (%)", range=[-3, 103]))
    return _layout(fig, f"{evaluation.name}: the refusal trade-off (top left is best)", 460)


def judged_figure(evaluation: Evaluation) -> go.Figure | None:
    """Judged win rate and length-controlled win rate of each model against the baseline, with their
    95% intervals; 50% is a draw."""
    judged = {pair: p["judged"] for pair, p in (evaluation.report.get("pairs") or {}).items()
              if isinstance(p, dict) and isinstance(p.get("judged"), dict)}
    if not judged:
        return None
    labels = [pair.replace("_vs_", " vs ") for pair in judged]
    fig = go.Figure()
    for key, ci, title, color in (("win_rate", "ci95", "judged win rate", "#1f77b4"),
                                  ("lc_win_rate", "lc_ci95", "length-controlled win rate", "#9467bd")):
        values = [100 * j[key] if isinstance(j.get(key), (int, float)) else None for j in judged.values()]
        intervals = [[100 * c for c in j[ci]] if j.get(ci) else None for j in judged.values()]
        fig.add_trace(go.Bar(name=title, y=labels, x=values, orientation="h", marker_color=color,
                             error_x=_whiskers(values, intervals),
                             hovertemplate=f"{title}: %{{x:.1f}}%<extra></extra>"))
    fig.add_vline(x=50, line_dash="dash", line_color="#6b7280")
    fig.update_layout(barmode="group", xaxis=dict(title="% of prompts won (ties count half)", range=[0, 100]))
    return _layout(fig, f"{evaluation.name}: judged win rate against {evaluation.report.get('baseline')}",
                   180 + 90 * len(judged))
