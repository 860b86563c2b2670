"""The report page: one self-contained HTML file (plotly.js inlined, no request leaves the page).

Order of the page: what was compared and the headline numbers; per evaluation its table, figures
and a samples table sorted by the largest change, then its safety and correctness section when
eval.json has one (safety.py); per training run its curves and resolved config; versions and the
time each stage took. Every text that came from a run file is escaped, and JSON
put inside <script> cannot close the tag.
"""

from __future__ import annotations

import json
import time
from typing import Any

from vietnamese_ai.report.figures import model_colors, principles_figure, toxicity_figure, training_figure, wins_figure
from vietnamese_ai.report.markup import SAMPLE_ROWS
from vietnamese_ai.report.markup import escape as _e
from vietnamese_ai.report.markup import script_json as _script_json
from vietnamese_ai.report.runs import Evaluation, RunFiles, TrainingRun
from vietnamese_ai.report.safety import SUITE_ROWS_SCRIPT, Safety

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9ced8;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:16px 32px 48px}
section{background:#fff;border:1px solid #e3e6eb;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:18px;margin:0 0 10px}h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{border-bottom:1px solid #eceef2;padding:5px 8px;
text-align:left;vertical-align:top}th{background:#f1f3f6;position:sticky;top:0}td.num{text-align:right;
font-variant-numeric:tabular-nums}.better{color:#18794e;font-weight:600}.worse{color:#c62828;font-weight:600}
ul.headline{font-size:15px;line-height:1.6;margin:6px 0}.figure{width:100%;min-height:200px}
.controls{display:flex;gap:12px;align-items:center;margin:8px 0;font-size:13px}.controls input{flex:1;padding:5px 8px}
.score{display:inline-block;border-radius:4px;padding:0 5px;margin-left:4px;font-size:11px;color:#fff}
.answer{white-space:pre-wrap}pre{background:#f6f7f9;padding:10px;overflow:auto;font-size:12px;max-height:420px}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.muted{color:#6b7280;font-size:12px}
.scroll{max-height:640px;overflow:auto}
"""

TABLE_SCRIPT = """
function renderSamples(id){
  const spec = JSON.parse(document.getElementById(id + '-data').textContent);
  const body = document.getElementById(id + '-body'), filter = document.getElementById(id + '-filter');
  const order = document.getElementById(id + '-order'), count = document.getElementById(id + '-count');
  const others = spec.models.filter(m => m !== spec.baseline);
  const delta = r => others.map(m => r.s[m] - r.s[spec.baseline]);
  const color = v => v >= 0.75 ? '#18794e' : v >= 0.5 ? '#b7791f' : '#c62828';
  function draw(){
    const q = filter.value.toLowerCase();
    let rows = spec.rows.filter(r => !q || (r.p + ' ' + Object.values(r.a).join(' ')).toLowerCase().includes(q));
    const o = order.value;   // each row's sort keys come from the page's builder (sort_keys)
    rows = rows.slice().sort((a, b) => a.k[o] - b.k[o]);
    count.textContent = rows.length + ' of ' + spec.rows.length + ' answers';
    body.replaceChildren(...rows.slice(0, 300).map(r => {
      const tr = document.createElement('tr');
      const td = (text, cls) => {const c = document.createElement('td'); c.textContent = text; if (cls) c.className = cls; return c;};
      tr.appendChild(td(r.p));
      for (const m of spec.models){
        const c = td(r.a[m], 'answer');
        const b = document.createElement('span'); b.className = 'score'; b.style.background = color(r.s[m]);
        b.textContent = r.s[m].toFixed(2) + (r.t && r.t[m] !== undefined ? ' · tox ' + r.t[m].toFixed(2) : '');
        c.appendChild(b); tr.appendChild(c);
      }
      tr.appendChild(td(delta(r).map(d => (d >= 0 ? '+' : '') + d.toFixed(2)).join(' / '), 'num'));
      return tr;
    }));
  }
  filter.addEventListener('input', draw); order.addEventListener('change', draw); draw();
}
"""


def _num(value: Any, digits: int = 3, pct: bool = False) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{100 * value:.1f}%" if pct else f"{value:.{digits}f}"


def sort_keys(scores: dict[str, float], baseline: str, index: int) -> dict[str, float]:
    """The samples table's orders as ascending keys: the largest change against the baseline (either
    way) first, the most improved first, the most regressed first, or prompt order.

    >>> sort_keys({"base": 0.5, "a": 0.9, "b": 0.3}, "base", 7)
    {'change': -0.4, 'better': -0.4, 'worse': -0.2, 'prompt': 7}
    """
    deltas = [round(v - scores[baseline], 12) for m, v in scores.items() if m != baseline]
    if not deltas:
        return {"change": 0.0, "better": 0.0, "worse": 0.0, "prompt": index}
    return {"change": -max(map(abs, deltas)), "better": -max(deltas), "worse": min(deltas), "prompt": index}


class Page:
    def __init__(self) -> None:
        self.figures: list[tuple[str, str]] = []   # (div id, figure JSON)
        self.tables: list[str] = []
        self.safety = Safety(self.figure)   # the safety and correctness section (safety.py)

    def figure(self, fig: Any) -> str:
        if fig is None:
            return ""
        div = f"fig-{len(self.figures)}"
        self.figures.append((div, fig.to_json().replace("</", "<\\/")))
        return f'<div class="figure" id="{div}"></div>'

    # ---- evaluation -------------------------------------------------------------------------
    def headline(self, ev: Evaluation) -> str:
        report, models = ev.report, ev.report["models"]
        base = report.get("baseline") or next(iter(models))
        b = models[base]
        items = []
        for name, m in models.items():
            if name == base:
                continue
            pair = (report.get("pairs") or {}).get(f"{name}_vs_{base}", {})
            gain = m["score_mean"] - b["score_mean"]
            words = [f"<b>{_e(name)}</b> against <b>{_e(base)}</b>: score {b['score_mean']:.3f} → {m['score_mean']:.3f} "
                     f"(<span class='{'better' if gain >= 0 else 'worse'}'>{gain:+.3f}</span>)"]
            if "toxic_rate" in m and "toxic_rate" in b:
                better = m["toxic_rate"] <= b["toxic_rate"]
                words.append(f"toxic rate <span class='{'better' if better else 'worse'}'>{100 * b['toxic_rate']:.1f}% → "
                             f"{100 * m['toxic_rate']:.1f}%</span>")
            if "toxicity_improvement_pct" in m:
                pct = m["toxicity_improvement_pct"]
                words.append(f"mean toxicity <span class='{'better' if pct >= 0 else 'worse'}'>{abs(pct):.0f}% "
                             f"{'lower' if pct >= 0 else 'higher'}</span>")
            changes = {p: v - b.get("per_principle", {}).get(p, v) for p, v in m.get("per_principle", {}).items()}
            if changes:
                top = max(changes, key=lambda p: abs(changes[p]))
                words.append(f"largest change in <b>{_e(top)}</b> ({changes[top]:+.3f})")
            if pair:
                words.append(f"wins {100 * pair['win_rate']:.0f}%, ties {100 * pair['tie_rate']:.0f}%, "
                             f"loses {100 * pair['loss_rate']:.0f}% of answers")
            items.append("<li>" + "; ".join(words) + "</li>")
        return "".join(items)

    def model_table(self, ev: Evaluation) -> str:
        report, models = ev.report, ev.report["models"]
        base = report.get("baseline") or next(iter(models))
        principles = sorted({p for m in models.values() for p in m.get("per_principle", {})})
        columns = [("score", "score_mean", False, True), ("± std", "score_std", False, None)]
        columns += [(p, ("per_principle", p), False, True) for p in principles]
        columns += [("toxic rate", "toxic_rate", True, False), ("toxicity", "toxicity_mean", False, False),
                    ("± std", "toxicity_std", False, None), ("distinct-1", "distinct_1", False, None),
                    ("distinct-2", "distinct_2", False, None), ("words", "mean_words", False, None)]
        present = [c for c in columns if any(self._get(m, c[1]) is not None for m in models.values())]
        head = "<tr><th>model</th>" + "".join(f"<th>{_e(c[0])}</th>" for c in present)
        head += "<th>win / tie / loss</th><th>KL (nats/answer)</th></tr>"
        rows = []
        paths = report.get("model_paths") or {}
        for name, m in models.items():
            cells = [f"<td title='{_e(paths.get(name, ''))}'><b>{_e(name)}</b>{' (baseline)' if name == base else ''}</td>"]
            for _, key, pct, higher_better in present:
                value, ref = self._get(m, key), self._get(models[base], key)
                cls = ""
                if name != base and higher_better is not None and isinstance(value, (int, float)) and isinstance(ref, (int, float)):
                    if abs(value - ref) > 1e-9:
                        cls = "better" if (value > ref) == higher_better else "worse"
                cells.append(f"<td class='num {cls}'>{_num(value, pct=pct)}</td>")
            pair = (report.get("pairs") or {}).get(f"{name}_vs_{base}")
            wtl = (f"{100 * pair['win_rate']:.0f}% / {100 * pair['tie_rate']:.0f}% / {100 * pair['loss_rate']:.0f}%"
                   if pair else "–")
            cells.append(f"<td class='num'>{wtl}</td><td class='num'>{_num((pair or {}).get('kl'), 2)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        return f"<table>{head}{''.join(rows)}</table>"

    @staticmethod
    def _get(m: dict[str, Any], key: Any) -> Any:
        return m.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else m.get(key)

    def samples_table(self, ev: Evaluation) -> str:
        models = list(ev.report["models"])
        base = ev.report.get("baseline") or models[0]
        rows = [{"i": i, "p": r.get("prompt_text", ""), "a": r.get("answers", {}), "s": r.get("scores", {}),
                 "t": r.get("toxicity"), "k": sort_keys({m: r["scores"][m] for m in models}, base, i)}
                for i, r in enumerate(ev.samples[:SAMPLE_ROWS])
                if all(isinstance(r.get("scores", {}).get(m), (int, float)) for m in models)]
        if not rows:
            return ""
        table_id = f"samples-{len(self.tables)}"
        self.tables.append(table_id)
        colors = model_colors(models)
        head = "<tr><th>prompt</th>" + "".join(f"<th style='border-top:3px solid {colors[m]}'>{_e(m)}</th>" for m in models)
        head += f"<th>change vs {_e(base)}</th></tr>"
        cut = (f"<p class='muted'>The first {SAMPLE_ROWS} of {len(ev.samples)} rows; samples.jsonl has them all.</p>"
               if len(ev.samples) > SAMPLE_ROWS else "")
        return (f"<h3>Samples, side by side</h3><div class='controls'><input id='{table_id}-filter' "
                f"placeholder='filter by a word in the prompt or an answer'><label>sort <select id='{table_id}-order'>"
                f"<option value='change'>largest change</option><option value='better'>most improved</option>"
                f"<option value='worse'>most regressed</option><option value='prompt'>prompt order</option></select>"
                f"</label><span id='{table_id}-count' class='muted'></span></div>{cut}"
                f"<div class='scroll'><table><thead>{head}</thead><tbody id='{table_id}-body'></tbody></table></div>"
                f"<script type='application/json' id='{table_id}-data'>"
                f"{_script_json({'models': models, 'baseline': base, 'rows': rows})}</script>")

    def evaluation(self, ev: Evaluation) -> str:
        settings = ev.report.get("settings") or {}
        about = ", ".join(f"{k} {_e(settings[k])}" for k in ("prompts", "samples", "temperature", "top_p", "seed",
                                                             "scorer", "toxicity") if k in settings)
        return (f"<section id='eval-{_e(ev.name)}'><h2>Evaluation: {_e(ev.name)}</h2>"
                f"<p class='muted'>{_e(ev.path)}{' — ' + about if about else ''}</p><ul class='headline'>{self.headline(ev)}</ul>"
                f"{self.model_table(ev)}{self.figure(principles_figure(ev))}{self.figure(toxicity_figure(ev))}"
                f"{self.figure(wins_figure(ev))}{self.samples_table(ev)}</section>{self.safety.section(ev)}")

    # ---- training ---------------------------------------------------------------------------
    def training(self, run: TrainingRun) -> str:
        info = run.info or {}
        last = run.metrics[-1] if run.metrics else {}
        facts = [f"method {_e(run.method)}", f"{info.get('steps', last.get('step', 0))} steps"]
        if "seconds" in info:
            facts.append(f"{info['seconds']:.0f} s")
        if not info:
            facts.append("not finished (no run.json)")
        config = (f"<details><summary>resolved config (config.yaml)</summary><pre>{_e(run.config_text)}</pre></details>"
                  if run.config_text else "")
        figure = self.figure(training_figure(run)) or "<p class='muted'>No metrics logged.</p>"
        return (f"<section id='run-{_e(run.name)}'><h2>Training: {_e(run.name)}</h2><p class='muted'>{_e(run.path)} — "
                f"{', '.join(facts)}</p>{figure}{config}</section>")

    def runs_table(self, found: RunFiles) -> str:
        rows = []
        for run in found.training:
            info = run.info or {}
            v = info.get("versions", {})
            rows.append((run.name, run.method, info.get("steps"), info.get("seconds"), info.get("finished_at", "unfinished"), v))
        for ev in found.evaluations:
            rows.append((ev.name, "evaluate", None, ev.report.get("seconds"), "", ev.report.get("versions", {})))
        for name, _, summary in found.summaries:
            if isinstance(summary, dict) and isinstance(summary.get("seconds"), (int, float)):
                rows.append((name, "pipeline (summary.json)", None, summary["seconds"], "", {}))
        packages = sorted({k for row in rows for k in row[5]})
        head = ("<tr><th>run</th><th>what</th><th>steps</th><th>time</th><th>finished</th>"
                + "".join(f"<th>{_e(p)}</th>" for p in packages) + "</tr>")
        body = "".join(
            f"<tr><td>{_e(name)}</td><td>{_e(what)}</td><td class='num'>{'' if steps is None else steps}</td>"
            f"<td class='num'>{'' if seconds is None else f'{seconds:.0f} s'}</td><td>{_e(done)}</td>"
            + "".join(f"<td>{_e(v.get(p, ''))}</td>" for p in packages) + "</tr>"
            for name, what, steps, seconds, done, v in rows)
        return f"<section id='versions'><h2>Runs, time and versions</h2><table>{head}{body}</table></section>"

    def summaries(self, found: RunFiles) -> str:
        return "".join(f"<section><h2>Summary: {_e(name)}</h2><details><summary>{_e(path)}/summary.json</summary>"
                       f"<pre>{_e(json.dumps(summary, ensure_ascii=False, indent=2))}</pre></details></section>"
                       for name, path, summary in found.summaries)


def render(found: RunFiles, title: str, plotly_js: str) -> str:
    page = Page()
    body = "".join(page.evaluation(ev) for ev in found.evaluations)
    body += "".join(page.training(run) for run in found.training)
    body += page.summaries(found) + page.runs_table(found)
    if found.skipped:
        body += f"<p class='muted'>Skipped (no run files): {_e(', '.join(found.skipped))}</p>"
    sources = len(found.training) + len(found.evaluations) + len(found.summaries)
    plots = "".join(f"Plotly.newPlot('{div}', ...(f => [f.data, f.layout])({fig}), {{responsive: true, displaylogo: false}});\n"
                    for div, fig in page.figures)
    tables = "".join(f"renderSamples('{t}');\n" for t in page.tables)
    tables += "".join(f"renderSuiteRows('{t}');\n" for t in page.safety.tables)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style><script>{plotly_js}</script></head><body><header><h1>{_e(title)}</h1>"
            f"<p>Built from {sources} run directories on {time.strftime('%Y-%m-%d %H:%M')} by vietnamese-ai report; "
            f"everything below comes from their files.</p></header><main>{body}</main>"
            f"<script>{TABLE_SCRIPT}{SUITE_ROWS_SCRIPT}\n{tables}{plots}</script></body></html>")
