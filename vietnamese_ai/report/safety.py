"""The report page's safety and correctness section, one per evaluation: the safety suites (toxicity,
bias, jailbreak, over-refusal) per language, the baseline (before) beside each model (after), rates with
their 95% interval; bars per bias category, jailbreak template and kind of safe prompt; the refusal
trade-off; the judged win rate; correctness against the references; and a browsable table of the
jailbreak and over-refusal prompts. Each part only when eval.json has it, nothing when it has none.

`page.py` makes one `Safety` with its `figure` callable (so that the figures are numbered and drawn
with the page's others) and puts `Safety.section(ev)` after each evaluation; the ids of the rows
tables are collected in `Safety.tables`, each filled in the browser by `SUITE_ROWS_SCRIPT`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vietnamese_ai.report.figures import judged_figure, model_colors, suite_bars, suite_languages, tradeoff_figure
from vietnamese_ai.report.markup import SAMPLE_ROWS
from vietnamese_ai.report.markup import escape as _e
from vietnamese_ai.report.markup import script_json as _script_json
from vietnamese_ai.report.runs import Evaluation

# The safety section's numbers: (key in eval.json, label, format, which way is better, key of its 95% interval).
# Better is "higher", "lower", "abs" (nearer 0: a bias score, in [-1, 1]) or None (a count, not coloured).
Measure = tuple[str, str, str, str | None, str | None]
SUITE_MEASURES: dict[str, tuple[Measure, ...]] = {
    "toxicity": (("toxic_rate", "toxic rate", "pct", "lower", "ci95"),
                 ("toxicity_mean", "mean toxicity", "num", "lower", None), ("answers", "answers", "int", None, None)),
    "bias": (("accuracy_ambiguous", "accuracy, ambiguous context", "pct", "higher", None),
             ("accuracy_disambiguated", "accuracy, disambiguated context", "pct", "higher", None),
             ("bias_ambiguous", "bias score, ambiguous (−1…1, 0 is unbiased)", "signed", "abs", None),
             ("bias_disambiguated", "bias score, disambiguated (−1…1)", "signed", "abs", None),
             ("questions", "questions", "int", None, None)),
    "jailbreak": (("attack_success_rate", "attack success rate", "pct", "lower", "ci95"),
                  ("prompts", "prompts", "int", None, None)),
    "over_refusal": (("over_refusal_rate", "over-refusal rate", "pct", "lower", "ci95"),
                     ("prompts", "prompts", "int", None, None)),
}
CORRECTNESS_MEASURES: tuple[Measure, ...] = (
    ("exact_match", "exact match", "pct", "higher", None), ("contains", "contains a reference", "pct", "higher", None),
    ("token_f1", "token F1", "num", "higher", None), ("answers", "answers", "int", None, None))
REFUSAL_SUITES = ("jailbreak", "over_refusal")   # suites whose rows carry answers and a refused flag

SUITE_ROWS_SCRIPT = """function renderSuiteRows(id){
  const spec = JSON.parse(document.getElementById(id + '-data').textContent);
  const body = document.getElementById(id + '-body'), filter = document.getElementById(id + '-filter');
  const order = document.getElementById(id + '-order'), count = document.getElementById(id + '-count');
  const group = document.getElementById(id + '-group');
  function draw(){
    const q = filter.value.toLowerCase(), g = group.value, o = order.value;
    let rows = spec.rows.filter(r => (!g || r.g === g) &&
      (!q || [r.p, r.c, r.t, ...Object.values(r.a)].join(' ').toLowerCase().includes(q)));
    rows = rows.slice().sort((a, b) => a.k[o] - b.k[o]);
    count.textContent = rows.length + ' of ' + spec.rows.length + ' prompts';
    body.replaceChildren(...rows.slice(0, 300).map(r => {
      const tr = document.createElement('tr');
      const td = (text, cls) => {const c = document.createElement('td'); c.textContent = text; if (cls) c.className = cls; return c;};
      tr.appendChild(td(r.g.replace('/', ' · ') + ' · ' + r.c + (r.t ? ' · ' + r.t : ''), 'muted'));
      tr.appendChild(td(r.p, 'answer'));
      for (const m of spec.models){
        const c = td(r.a[m], 'answer');
        const b = document.createElement('span'); b.className = 'score';
        // Refusing is right on a jailbreak and wrong on a safe prompt (over-refusal).
        b.style.background = r.r[m] === r.g.startsWith('jailbreak') ? '#18794e' : '#c62828';
        b.textContent = r.r[m] ? 'refused' : 'answered';
        c.appendChild(b); tr.appendChild(c);
      }
      return tr;
    }));
  }
  filter.addEventListener('input', draw); order.addEventListener('change', draw); group.addEventListener('change', draw);
  draw();
}
"""


def verdict(value: Any, ref: Any, better: str | None) -> str:
    """'better', 'worse' or '' (equal, not comparable, or a count) for a model's number against the baseline's.

    >>> verdict(0.2, 0.5, "lower"), verdict(-0.1, 0.3, "abs"), verdict(0.4, 0.5, "higher"), verdict(0.5, 0.5, "higher")
    ('better', 'better', 'worse', '')
    """
    if better is None or not isinstance(value, (int, float)) or not isinstance(ref, (int, float)) or abs(value - ref) <= 1e-9:
        return ""
    if better == "abs":
        value, ref, better = abs(value), abs(ref), "lower"
    return "better" if (value > ref) == (better == "higher") else "worse"


def shown(value: Any, kind: str, interval: Any = None) -> str:
    """A number as the safety tables show it, with its 95% interval when there is one.

    >>> shown(0.375, "pct", [0.2, 0.5625]), shown(-0.25, "signed"), shown(12, "int"), shown(None, "pct")
    ('37.5% [20.0–56.2]', '−0.250', '12', '–')
    """
    if not isinstance(value, (int, float)):
        return "–"
    if kind == "int":
        return f"{value:.0f}"
    if kind == "signed":
        return f"{value:+.3f}".replace("-", "−")
    if kind == "num":
        return f"{value:.3f}"
    text = f"{100 * value:.1f}%"
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        text += f" [{100 * interval[0]:.1f}–{100 * interval[1]:.1f}]"
    return text


def refusal_rows(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """The jailbreak and over-refusal rows of samples.jsonl as the browsable table holds them. Sort keys
    (ascending): `disagree` puts first the prompts where the models' refusals differ, `prompt` is file order.

    >>> refusal_rows([{"suite": "jailbreak", "language": "vi", "category": "fraud", "template": "plain",
    ...                "prompt_text": "p", "answers": {"a": "x", "b": "y"}, "refused": {"a": False, "b": True}},
    ...               {"suite": "bias", "language": "vi"}], ["a", "b"])[0]["k"]
    {'disagree': 0, 'prompt': 0}
    """
    out = []
    for r in rows:
        if r.get("suite") not in REFUSAL_SUITES or not isinstance(r.get("refused"), dict):
            continue
        refused = {m: bool(r["refused"].get(m)) for m in models}
        out.append({"g": f"{r['suite']}/{r.get('language', '')}", "c": r.get("category", ""), "t": r.get("template", ""),
                    "p": r.get("prompt_text", ""), "a": {m: r.get("answers", {}).get(m, "") for m in models}, "r": refused,
                    "k": {"disagree": int(len(set(refused.values())) == 1), "prompt": len(out)}})
    return out


class Safety:
    """The section's parts for one page; `section(ev)` is the whole of it for one evaluation."""

    def __init__(self, figure: Callable[[Any], str]) -> None:
        self.figure = figure          # the page's: a plotly figure to its <div>, "" for None
        self.tables: list[str] = []   # ids of the jailbreak and over-refusal rows tables

    @staticmethod
    def side_by_side(models: dict[str, dict[str, Any]], base: str, blocks: list[tuple[str, str, dict[str, Any]]],
                     measures: tuple[Measure, ...]) -> str:
        """Rows = (block, measure), columns = models, baseline first ("before"). `blocks` are (id, label,
        {model: its numbers}); each cell is coloured better/worse against the baseline's, and carries
        data-cell='id/key/model' so that a test can find it."""
        order = [base] + [m for m in models if m != base]
        head = "<tr><th></th><th>measure</th>" + "".join(
            f"<th>{_e(m)} ({'before' if m == base else 'after'})</th>" for m in order) + "</tr>"
        rows = []
        for block, label, numbers in blocks:
            present = [ms for ms in measures if any(isinstance((numbers.get(m) or {}).get(ms[0]), (int, float)) for m in order)]
            for i, (key, name, kind, better, ci) in enumerate(present):
                cells = [f"<td>{_e(label) if i == 0 else ''}</td><td>{_e(name)}</td>"]
                for m in order:
                    value, ref = (numbers.get(m) or {}).get(key), (numbers.get(base) or {}).get(key)
                    cls = verdict(value, ref, better) if m != base else ""
                    cells.append(f"<td class='num {cls}' data-cell='{_e(block)}/{_e(key)}/{_e(m)}'>"
                                 f"{shown(value, kind, (numbers.get(m) or {}).get(ci) if ci else None)}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
        return f"<table>{head}{''.join(rows)}</table>" if rows else ""

    def judged_table(self, ev: Evaluation) -> str:
        pairs = {k: p["judged"] for k, p in (ev.report.get("pairs") or {}).items()
                 if isinstance(p, dict) and isinstance(p.get("judged"), dict)}
        if not pairs:
            return ""
        head = ("<tr><th>pair</th><th>judge</th><th>win rate [95%]</th><th>length-controlled [95%]</th>"
                "<th>length coefficient</th><th>wins / ties / losses</th><th>prompts</th></tr>")
        rows = []
        for pair, j in pairs.items():
            cell = lambda key, text, cls="": f"<td class='num {cls}' data-cell='judged/{_e(pair)}/{key}'>{text}</td>"  # noqa: E731
            rows.append(f"<tr><td>{_e(pair.replace('_vs_', ' vs '))}</td><td>{_e(j.get('judge', ''))}</td>"
                        + cell("win_rate", shown(j.get("win_rate"), "pct", j.get("ci95")), verdict(j.get("win_rate"), 0.5, "higher"))
                        + cell("lc_win_rate", shown(j.get("lc_win_rate"), "pct", j.get("lc_ci95")),
                               verdict(j.get("lc_win_rate"), 0.5, "higher"))
                        + cell("length_coefficient", shown(j.get("length_coefficient"), "signed"))
                        + cell("wins", " / ".join(shown(j.get(k), "int") for k in ("wins", "ties", "losses")))
                        + cell("n", shown(j.get("n"), "int")) + "</tr>")
        return ("<h3>Judged win rate against the baseline</h3><p class='muted'>Each prompt judged twice, the answers "
                "swapped; a win must survive the swap, ties count half. The length-controlled rate is the win rate "
                "predicted for answers of equal length (a positive length coefficient: the judge prefers longer "
                f"answers).</p><table>{head}{''.join(rows)}</table>{self.figure(judged_figure(ev))}")

    def suite_rows_table(self, ev: Evaluation) -> str:
        models = list(ev.report["models"])
        rows = refusal_rows(ev.suite_rows, models)
        if not rows:
            return ""
        table_id = f"suite-rows-{len(self.tables)}"
        self.tables.append(table_id)
        colors = model_colors(models)
        groups = "".join(f"<option value='{_e(g)}'>{_e(g.replace('/', ' · '))}</option>"
                         for g in dict.fromkeys(r["g"] for r in rows))
        head = "<tr><th>suite</th><th>prompt</th>" + "".join(
            f"<th style='border-top:3px solid {colors[m]}'>{_e(m)}</th>" for m in models) + "</tr>"
        shown_rows = rows[:SAMPLE_ROWS]
        cut = (f"<p class='muted'>The first {SAMPLE_ROWS} of {len(rows)} rows; samples.jsonl has them all.</p>"
               if len(rows) > SAMPLE_ROWS else "")
        return (f"<h3>Jailbreak and over-refusal prompts, side by side</h3><p class='muted'>A green badge is the right "
                f"call (a jailbreak refused, a safe prompt answered), a red one the wrong call.</p>"
                f"<div class='controls'><input id='{table_id}-filter' placeholder='filter by a word in the prompt, "
                f"an answer or the category'><label>suite <select id='{table_id}-group'><option value=''>all</option>"
                f"{groups}</select></label><label>sort <select id='{table_id}-order'><option value='disagree'>models "
                f"disagree first</option><option value='prompt'>file order</option></select></label>"
                f"<span id='{table_id}-count' class='muted'></span></div>{cut}<div class='scroll'><table><thead>{head}"
                f"</thead><tbody id='{table_id}-body'></tbody></table></div><script type='application/json' "
                f"id='{table_id}-data'>{_script_json({'models': models, 'rows': shown_rows})}</script>")

    def section(self, ev: Evaluation) -> str:
        """Before/after tables and bars of the safety suites, the refusal trade-off, the judged win rate
        and correctness: each part only when eval.json has it; nothing when it has none."""
        models = ev.report["models"]
        base = ev.report.get("baseline") or next(iter(models))
        parts = []
        for suite, measures in SUITE_MEASURES.items():
            blocks = [(f"{suite}/{lang}", lang, {m: (v.get("suites") or {}).get(suite, {}).get(lang) for m, v in models.items()})
                      for lang in suite_languages(ev, suite)]
            table = self.side_by_side(models, base, blocks, measures)
            if table:
                parts.append(f"<h3>{_e(suite.replace('_', '-'))}</h3>{table}")
        if parts:
            parts.insert(0, "<p class='muted'>Each suite per language, the baseline (before) beside each model (after); "
                            "rates with their 95% interval. Green is better than the baseline, red worse.</p>")
        parts.append(self.figure(suite_bars(ev, "bias", "categories", "bias_ambiguous",
                                            "bias score per category, ambiguous contexts (0 is unbiased)", "bias score", False)))
        parts.append(self.figure(suite_bars(ev, "jailbreak", "templates", "rate",
                                            "attack success rate per jailbreak template (lower is better)", "%", True)))
        parts.append(self.figure(suite_bars(ev, "over_refusal", "categories", "rate",
                                            "over-refusal per category of safe prompt (lower is better)", "%", True)))
        tradeoff = self.figure(tradeoff_figure(ev))
        if tradeoff:
            parts.append("<h3>The refusal trade-off</h3><p>A model that refuses everything scores perfectly on jailbreaks "
                         "and worst on over-refusal, so the two must be read together: the good corner is top left.</p>"
                         + tradeoff)
        parts.append(self.judged_table(ev))
        languages = list(dict.fromkeys(lang for m in models.values() for lang in (m.get("correctness") or {})))
        table = self.side_by_side(models, base, [(f"correctness/{lang}", lang, {m: (v.get("correctness") or {}).get(lang)
                                                                               for m, v in models.items()})
                                                 for lang in languages], CORRECTNESS_MEASURES)
        if table:
            parts.append("<h3>Correctness against the references</h3><p class='muted'>Per prompt language and over all; "
                         f"each answer keeps its best score over the references.</p>{table}")
        parts.append(self.suite_rows_table(ev))
        if not "".join(parts):
            return ""
        return f"<section id='safety-{_e(ev.name)}'><h2>Safety and correctness: {_e(ev.name)}</h2>{''.join(parts)}</section>"
