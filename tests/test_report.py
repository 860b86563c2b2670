"""`vietnamese-ai report`: built from run files alone (no model, no torch), every text escaped,
secrets redacted, bad files named in one line; and in a real headless Chromium the page loads with
no console error and no network request, every figure has a size, and the screenshot is not blank."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import read_only_dir, report_page, write_jsonl
from vietnamese_ai.cli import main

INJECTION = "</script><script>window.injected = 1</script><b>bold</b>"


def _fixture_runs(root):
    """A DPO run, a PPO run that never finished, and an evaluation of three models, written by hand."""
    dpo = root / "dpo"
    dpo.mkdir(parents=True)
    (dpo / "config.yaml").write_text("model_name_or_path: runs/sft/final\nbeta: 0.1\nhub_token: hf_SECRET123\nmax_new_tokens: 48\n",
                                     encoding="utf-8")
    write_jsonl(dpo / "metrics.jsonl", [{"step": s, "loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s,
                                         "rewards/accuracies": 0.5 + 0.05 * s, "learning_rate": 1e-4,
                                         **({"eval/loss": 0.72 - 0.04 * s} if s % 2 == 0 else {})} for s in range(1, 9)])
    (dpo / "run.json").write_text(json.dumps({"method": "dpo", "steps": 8, "seconds": 12.5, "finished_at":
                                              "2026-01-01T10:00:00", "versions": {"torch": "2.13.0"}}), encoding="utf-8")
    ppo = root / "ppo"
    ppo.mkdir()
    write_jsonl(ppo / "metrics.jsonl", [{"step": s, "loss": 0.1, "reward": -1 + 0.2 * s, "objective/kl": 0.01 * s,
                                         "ppo/policy/clipfrac": 0.0} for s in range(1, 5)])
    with open(ppo / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')   # killed while writing its last line
    evaluation = root / "eval"
    evaluation.mkdir()
    answers = {"base": ["Đồ ngốc.", "Xin chào!"], "sft": [INJECTION, "Hà Nội."], "dpo": ["Hà Nội là thủ đô.", "Chào bạn."]}
    scores = {"base": [0.2, 0.6], "sft": [0.5, 0.7], "dpo": [0.9, 0.65]}
    tox = {"base": [0.9, 0.0], "sft": [0.1, 0.0], "dpo": [0.0, 0.0]}
    rows = [{"prompt": p, "prompt_text": p, "sample": 0, "answers": {m: answers[m][i] for m in answers},
             "scores": {m: scores[m][i] for m in scores}, "principles": {m: {"harmless": scores[m][i]} for m in scores},
             "toxicity": {m: tox[m][i] for m in tox}, "toxic": {m: tox[m][i] > 0.5 for m in tox}}
            for i, p in enumerate(["Thủ đô của Việt Nam?", "Xin chào"])]
    # In the file the smaller change (+0.1) comes first, the larger (+0.7) second: sorting must move them.
    write_jsonl(evaluation / "samples.jsonl", rows[::-1])
    models = {m: {"score_mean": sum(scores[m]) / 2, "score_std": 0.1, "per_principle": {"harmless": sum(scores[m]) / 2},
                  "toxic_rate": sum(t > 0.5 for t in tox[m]) / 2, "toxicity_mean": sum(tox[m]) / 2, "toxicity_std": 0.1,
                  "distinct_1": 1.0, "distinct_2": 1.0, "mean_words": 2.0, "answers": 2} for m in answers}
    pairs = {f"{m}_vs_base": {"win_rate": 1.0, "tie_rate": 0.0, "loss_rate": 0.0, "kl": 1.5} for m in ("sft", "dpo")}
    (evaluation / "eval.json").write_text(json.dumps({"baseline": "base", "models": models, "pairs": pairs,
                                                      "settings": {"prompts": 2, "samples": 1}}), encoding="utf-8")
    (root / "summary.json").write_text(json.dumps({"seconds": 99.0}), encoding="utf-8")
    (root / "notes.txt").write_text("not a run file", encoding="utf-8")
    (root / "data").mkdir()
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = _fixture_runs(tmp_path_factory.mktemp("runs") / "demo")
    out = root.parent / "report.html"
    # A separate interpreter, so that what the report imports can be checked: no model library.
    code = ("import sys; from vietnamese_ai.cli import main; code = main(['report', sys.argv[1], '--output', sys.argv[2]]);"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules];"
            "print(heavy); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(root), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"the report imported {done.stdout.strip()}"
    return out, root


def test_the_report_is_built_from_files_alone(report):
    out, _ = report
    page = out.read_text(encoding="utf-8")
    for text in ("Training: dpo", "Training: ppo", "Evaluation: eval", "reward margin", "not finished (no run.json)",
                 "Thủ đô của Việt Nam?", "Samples, side by side", "2.13.0"):
        assert text in page, text
    assert "hf_SECRET123" not in page and "hub_token: &#x27;***&#x27;" in page   # secrets never shown
    assert "max_new_tokens: 48" in page            # a setting whose name merely contains "token" is shown
    assert INJECTION not in page and "window.injected" in page   # present, but as data only
    from plotly.offline import get_plotlyjs

    markup = page.replace(get_plotlyjs(), "")   # plotly.js is inlined whole; our own markup fetches nothing
    assert get_plotlyjs() in page and not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=", markup)


def test_the_samples_table_sorts_by_the_largest_change(report):
    out, _ = report
    page = out.read_text(encoding="utf-8")
    start = page.index("<script type='application/json' id='samples-0-data'>") + len(
        "<script type='application/json' id='samples-0-data'>")
    data = json.loads(page[start:page.index("</script>", start)].replace("<\\/", "</"))
    assert data["baseline"] == "base" and data["models"] == ["base", "sft", "dpo"]
    assert [r["p"] for r in data["rows"]] == ["Xin chào", "Thủ đô của Việt Nam?"]   # file order
    # The page sorts by these keys (ascending). By hand, changes against base: "Xin chào" sft +0.1, dpo +0.05;
    # "Thủ đô" sft +0.3, dpo +0.7. Largest change and most improved: "Thủ đô" first; most regressed (the
    # smallest change first): "Xin chào" first.
    order = lambda key: [r["p"] for r in sorted(data["rows"], key=lambda r: r["k"][key])]  # noqa: E731
    assert order("change") == order("better") == ["Thủ đô của Việt Nam?", "Xin chào"]
    assert order("worse") == order("prompt") == ["Xin chào", "Thủ đô của Việt Nam?"]
    by_prompt = {r["p"]: r["k"] for r in data["rows"]}
    assert by_prompt["Thủ đô của Việt Nam?"]["change"] == pytest.approx(-0.7)
    assert by_prompt["Xin chào"]["worse"] == pytest.approx(0.05)
    assert data["rows"][1]["a"]["sft"] == INJECTION


@pytest.mark.parametrize("make,fragment", [
    (lambda p: str(p / "missing"), "no such file or directory"),
    (lambda p: str(p), "no run files"),
    (lambda p: _bad_metrics(p), "metrics.jsonl: line 2: not valid JSON"),
    (lambda p: _bad_eval(p), "eval.json: no 'models'"),
])
def test_bad_report_input_is_one_line(tmp_path, capsys, make, fragment):
    assert main(["report", make(tmp_path), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "r.html").exists()



@pytest.mark.parametrize("args,fragment", [
    (lambda tmp, mp: ["--output", str(read_only_dir(tmp / "ro", mp) / "r.html")], "--output: '{tmp}/ro' is not writable"),
    (lambda tmp, mp: ["--output", str(tmp)], "--output: '{tmp}' is a directory; give a file name"),
    (lambda tmp, mp: ["--output", str(tmp / "r.html"), "--png", write_jsonl(tmp / "a_file", [])],
     "--png: '{tmp}/a_file' is a file, not a directory"),
    (lambda tmp, mp: ["--output", str(tmp / "r.html"), "--png", str(tmp / "a_file" / "png")],
     "--png: cannot create '{tmp}/a_file/png': '{tmp}/a_file' is a file"),
    (lambda tmp, mp: ["--output", str(tmp / "r.html"), "--png", str(read_only_dir(tmp / "ro", mp) / "png")],
     "--png: '{tmp}/ro' is not writable"),
])
def test_a_report_output_that_cannot_be_written_is_refused_before_anything_is_built(tmp_path, capsys, monkeypatch,
                                                                                     args, fragment):
    runs = _fixture_runs(tmp_path / "demo")
    write_jsonl(tmp_path / "a_file", [])
    argv = ["report", str(runs), *args(tmp_path, monkeypatch)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "r.html").exists()   # checked before the page is built


def test_report_without_run_directories_is_one_line(capsys):
    assert main(["report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "RUN_DIR" in err, err


def _bad_metrics(path):
    (path / "run").mkdir()
    (path / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 1}\n{"step": 2,\n{"step": 3, "loss": 1}\n')
    return str(path / "run")


def _bad_eval(path):
    (path / "ev").mkdir()
    (path / "ev" / "eval.json").write_text('{"something": 1}')
    return str(path / "ev")


def test_the_report_renders_in_a_real_browser(report):
    out, root = report
    from PIL import Image
    import io

    with report_page(out) as (page, errors, requests):
        figures = page.eval_on_selector_all(".figure", "els => els.map(e => [e.classList.contains('js-plotly-plot'), "
                                                       "e.getBoundingClientRect().width, e.getBoundingClientRect().height, "
                                                       "e.querySelectorAll('.main-svg').length])")
        injected = page.evaluate("window.injected === undefined")
        rows = page.eval_on_selector_all("#samples-0-body tr", "trs => trs.map(t => t.cells[0].textContent)")
        page.select_option("#samples-0-order", "prompt")
        in_prompt_order = page.eval_on_selector_all("#samples-0-body tr", "trs => trs.map(t => t.cells[0].textContent)")
        page.select_option("#samples-0-order", "change")
        page.fill("#samples-0-filter", "xin chào")
        filtered = page.eval_on_selector_all("#samples-0-body tr", "trs => trs.length")
        shot = page.screenshot(full_page=False)
    assert not errors, errors
    assert not requests, requests
    assert len(figures) >= 5   # dpo and ppo curves; principles, toxicity, wins
    for is_plot, width, height, svgs in figures:
        assert is_plot and width > 100 and height > 100 and svgs > 0
    assert injected   # the answer's <script> stayed text
    assert rows == ["Thủ đô của Việt Nam?", "Xin chào"]   # the largest change first (+0.7 against +0.1), not file order
    assert in_prompt_order == ["Xin chào", "Thủ đô của Việt Nam?"]
    assert filtered == 1
    image = Image.open(io.BytesIO(shot)).convert("L")
    low, high = image.getextrema()
    assert sum(1 for n in image.histogram() if n) > 16 and high - low > 100   # not blank


def _drawn_counts(trace, axis_max):
    """(left edge, count) of each bar the figure draws inside [0, axis_max]. A plotly Histogram is binned
    in the browser as plotly.js documents it: bins [start + k size, start + (k + 1) size) for as long as
    a bin starts below `end`."""
    if trace.type == "bar":
        return [(x - w / 2, y) for x, y, w in zip(trace.x, trace.y, trace.width) if x - w / 2 < axis_max]
    start, end, size = trace.xbins.start, trace.xbins.end, trace.xbins.size
    edges = [start + k * size for k in range(int((end - start) / size) + 2) if start + k * size < end]
    counts = [(e, sum(e <= v < e + size for v in trace.x)) for e in edges]
    return [(e, n) for e, n in counts if e < axis_max]


def test_the_toxicity_histogram_counts_every_answer_in_bins_that_cover_0_to_1():
    from vietnamese_ai.report.figures import toxicity_figure
    from vietnamese_ai.report.runs import Evaluation

    before = [0.0, 0.0, 0.05, 0.5, 0.97, 1.0, 1.0]   # two answers as toxic as can be
    after = [0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0]
    rows = [{"toxicity": {"sft": b, "dpo": a}} for b, a in zip(before, after)]
    models = {"sft": {"toxicity_mean": sum(before) / 7, "toxicity_std": 0.1},
              "dpo": {"toxicity_mean": sum(after) / 7, "toxicity_std": 0.1}}
    figure = toxicity_figure(Evaluation("eval", "runs/eval", {"baseline": "sft", "models": models}, rows))
    axis_max = figure.layout.xaxis.range[1]
    assert axis_max == 1
    sft, dpo = (dict((round(edge, 6), n) for edge, n in _drawn_counts(trace, axis_max) if n) for trace in figure.data)
    # By hand, 20 bins of width 0.05, each [a, a + 0.05), the last [0.95, 1] closed so that 1.0 is drawn:
    assert sft == {0.0: 2, 0.05: 1, 0.5: 1, 0.95: 3}
    assert dpo == {0.0: 6, 0.1: 1}
    assert sum(sft.values()) == sum(dpo.values()) == 7   # every answer the legend's mean counts


def test_a_metric_logged_under_two_names_is_drawn_once(tmp_path):
    """PPO logs kl and objective/kl (and others) for the same number; the report draws our name once,
    and the original recipe's name only when a run logged nothing else."""
    from vietnamese_ai.report.figures import training_figure
    from vietnamese_ai.report.runs import collect

    both, original = tmp_path / "ppo", tmp_path / "trl"
    for path in (both, original):
        path.mkdir()
    write_jsonl(both / "metrics.jsonl", [{"step": s, "loss": 0.1, "kl": 0.01 * s, "objective/kl": 0.01 * s,
                                          "kl_coef": 0.05, "objective/kl_coef": 0.05, "clip_ratio": 0.1,
                                          "ppo/policy/clipfrac": 0.1, "ppo/val/clipfrac": 0.2} for s in (1, 2)])
    write_jsonl(original / "metrics.jsonl", [{"step": s, "loss": 0.1, "objective/kl": 0.01 * s} for s in (1, 2)])
    found = collect([str(both), str(original)])
    drawn = {run.name: [trace.name for trace in training_figure(run).data] for run in found.training}
    assert sorted(drawn["ppo"]) == ["clip_ratio", "kl", "kl_coef", "loss", "ppo/val/clipfrac"]
    assert sorted(drawn["trl"]) == ["loss", "objective/kl"]


def test_ppo_stores_each_statistic_once_under_the_name_the_report_draws(tmp_path, tiny_model, prompts_file,
                                                                      rewards_file):
    """PPO logs our name of each statistic the alias table knows, and never the original recipe's as well."""
    from tests.test_ppo import _config
    from vietnamese_ai.metric_names import PPO_RECIPE_NAMES
    from vietnamese_ai.recipes.ppo import run_ppo

    result = run_ppo(_config(tmp_path, tiny_model, prompts_file, f"python:{rewards_file}:even_tokens", max_steps=1))
    [row] = result.history
    assert set(PPO_RECIPE_NAMES.values()) <= set(row) and not set(PPO_RECIPE_NAMES) & set(row)
