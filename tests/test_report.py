"""`vietnamese-ai report`: built from run files alone (no model, no torch), every text escaped,
secrets redacted, bad files named in one line; and in a real headless Chromium the page loads with
no console error and no network request, every figure has a size, and the screenshot is not blank."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.report.png import find_chromium

INJECTION = "</script><script>window.injected = 1</script><b>bold</b>"


def _fixture_runs(root):
    """A DPO run, a PPO run that never finished, and an evaluation of three models, written by hand."""
    dpo = root / "dpo"
    dpo.mkdir(parents=True)
    (dpo / "config.yaml").write_text("model_name_or_path: runs/sft/final\nbeta: 0.1\nhub_token: hf_SECRET123\n",
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
    write_jsonl(evaluation / "samples.jsonl", rows)
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
    assert data["rows"][0]["a"]["sft"] == INJECTION


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
    browser_path = find_chromium()
    if browser_path is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; `make test` installs it as root)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    from PIL import Image
    import io

    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        figures = page.eval_on_selector_all(".figure", "els => els.map(e => [e.classList.contains('js-plotly-plot'), "
                                                       "e.getBoundingClientRect().width, e.getBoundingClientRect().height, "
                                                       "e.querySelectorAll('.main-svg').length])")
        injected = page.evaluate("window.injected === undefined")
        rows = page.eval_on_selector_all("#samples-0-body tr", "trs => trs.map(t => t.cells[0].textContent)")
        page.fill("#samples-0-filter", "xin chào")
        filtered = page.eval_on_selector_all("#samples-0-body tr", "trs => trs.length")
        shot = page.screenshot(full_page=False)
        browser.close()
    assert not errors, errors
    assert not requests, requests
    assert len(figures) >= 5   # dpo and ppo curves; principles, toxicity, wins
    for is_plot, width, height, svgs in figures:
        assert is_plot and width > 100 and height > 100 and svgs > 0
    assert injected   # the answer's <script> stayed text
    assert rows == ["Thủ đô của Việt Nam?", "Xin chào"]   # the largest change first (+0.7 against +0.05)
    assert filtered == 1
    image = Image.open(io.BytesIO(shot)).convert("L")
    low, high = image.getextrema()
    assert sum(1 for n in image.histogram() if n) > 16 and high - low > 100   # not blank
