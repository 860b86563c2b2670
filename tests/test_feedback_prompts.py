"""`vietnamese-ai feedback prompts`: templates x slot fillers, Self-Instruct with its filters and ROUGE-L
novelty, bad inputs in one line before any model loads, and a pipeline stage whose prompts `feedback
generate` reads as they are."""

import functools
import unicodedata
from collections import Counter

import pytest

from tests.conftest import read_jsonl, write_jsonl
from vietnamese_ai.cli import main
from vietnamese_ai.data.text import detect_language, words
from vietnamese_ai.feedback.prompts import NoveltyIndex, rouge_l
from vietnamese_ai.feedback.self_instruct import BANNED_WORDS, InstructionFilter, self_instruct
from vietnamese_ai.recipes.prompts import PromptsConfig, run_prompts


def _lcs(a, b):
    """An independent LCS: the textbook recursion, memoised (rouge_l uses one rolling row)."""
    @functools.lru_cache(maxsize=None)
    def go(i, j):
        if i == len(a) or j == len(b):
            return 0
        return 1 + go(i + 1, j + 1) if a[i] == b[j] else max(go(i + 1, j), go(i, j + 1))
    return go(0, 0)


def _f(x, y):
    a, b = tuple(words(x)), tuple(words(y))
    return 2 * _lcs(a, b) / (len(a) + len(b)) if a and b else 0.0


def _key(text):
    """Normalised as the brief says, without the package's helpers: whitespace collapsed, lowercase, no
    diacritics, đ -> d."""
    text = unicodedata.normalize("NFD", " ".join(text.split()).lower().replace("đ", "d"))
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


def test_rouge_l_by_hand():
    # "the cat sat on the mat" / "the cat lay on a mat": LCS = the, cat, on, mat = 4; F = 2*4 / (6 + 6)
    assert rouge_l(words("the cat sat on the mat"), words("the cat lay on a mat")) == pytest.approx(8 / 12)
    # 7 and 9 words sharing "giải thích ... cho học sinh" (5): F = 2*5 / (7 + 9) = 0.625
    assert rouge_l(words("Giải thích lạm phát cho học sinh."),
                   words("Giải thích quang hợp cho học sinh cấp ba.")) == pytest.approx(0.625)
    # order matters: LCS of (a b c) and (c b a) is 1, although every word is shared
    assert rouge_l(["a", "b", "c"], ["c", "b", "a"]) == pytest.approx(2 / 6)
    assert rouge_l(["x"], ["x"]) == 1.0 and rouge_l([], ["x"]) == 0.0 and rouge_l(["x"], ["y"]) == 0.0


def test_novelty_drops_at_the_threshold_itself_and_normalised_duplicates():
    held = NoveltyIndex(0.625)
    held.add("Giải thích quang hợp cho học sinh cấp ba.")
    assert held.rejects("Giải thích lạm phát cho học sinh.") == "similar"   # ROUGE-L 0.625, not below 0.625
    assert held.rejects("giai thich  QUANG hop cho hoc sinh cap ba.") == "duplicate"
    looser = NoveltyIndex(0.63)
    looser.add("Giải thích quang hợp cho học sinh cấp ba.")
    assert looser.rejects("Giải thích lạm phát cho học sinh.") is None


def _templates(tmp_path, **keys):
    out = tmp_path / f"p{len(list(tmp_path.iterdir()))}.jsonl"
    run_prompts(PromptsConfig(output=str(out), **keys))
    return read_jsonl(out)


def test_the_same_seed_gives_the_same_prompts_and_another_seed_others(tmp_path):
    first, again = _templates(tmp_path, num_prompts=40, seed=3), _templates(tmp_path, num_prompts=40, seed=3)
    other = _templates(tmp_path, num_prompts=40, seed=4)
    assert first == again
    assert {r["prompt"] for r in first} != {r["prompt"] for r in other}


def test_prompts_are_distinct_after_normalisation_in_both_languages(tmp_path):
    rows = _templates(tmp_path, num_prompts=300)
    assert len(rows) == 300 and len({_key(r["prompt"]) for r in rows}) == 300
    assert Counter(r["language"] for r in rows) == {"vi": 150, "en": 150}
    assert all(detect_language(r["prompt"]) == r["language"] and r["source"] == "templates" for r in rows)
    # provenance: the template and the fillers it took
    assert all(all(v in r["prompt"] for v in r["slots"].values()) for r in rows)
    assert _templates(tmp_path, num_prompts=10, languages="en") and \
        {r["language"] for r in _templates(tmp_path, num_prompts=10, languages=["en"])} == {"en"}


def test_a_user_file_extends_or_replaces_the_built_in_templates(tmp_path, caplog):
    own = tmp_path / "own.yaml"
    own.write_text("slots:\n  vi:\n    city: [Hà Nội, Huế, ha noi]\n"
                   "templates:\n  vi:\n    visit: 'Tôi nên đi đâu ở {city}?'\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="vietnamese_ai"):
        rows = _templates(tmp_path, templates=str(own), languages="vi", num_prompts=3)
    # "Hà Nội" and "ha noi" are one prompt once folded: 3 combinations, 2 distinct prompts, said in one line
    assert sorted(r["slots"]["city"] for r in rows) in (["Huế", "Hà Nội"], ["Huế", "ha noi"])
    assert "only 2 distinct prompts after normalisation (of 3 combinations" in caplog.text
    with pytest.raises(Exception, match="gives only 3 template x filler combinations in vi"):
        _templates(tmp_path, templates=str(own), languages="vi", num_prompts=4)
    own.write_text("extends: default\nslots:\n  en:\n    topic: [tide pools]\n"
                   "templates:\n  en:\n    explain: 'Tell me about {topic}.'\n", encoding="utf-8")
    rows = _templates(tmp_path, templates=str(own), languages="en", num_prompts=400, seed=1)
    explained = [r for r in rows if r["template"] == "explain"]
    assert explained and all(r["prompt"].startswith("Tell me about ") for r in explained)   # replaced by id
    assert {r["template"] for r in rows} > {"explain", "compare", "quiz"}                   # the built-in ones stay
    assert any("tide pools" in r["prompt"] for r in rows)                                   # a filler added


def _one_line(capsys, argv):
    assert main(["feedback", "prompts", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_template_with_an_unknown_slot_is_one_line_naming_file_template_and_slot_before_anything_else(
        tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: default\ntemplates:\n  en:\n    travel: 'Plan a trip to {topik}.'\n", encoding="utf-8")
    # the output is a directory and the model does not exist: the template file is still what is said
    line = _one_line(capsys, [f"templates={bad}", f"output={tmp_path}", "model_name_or_path=/no/such/model"])
    assert f"{bad}: template 'en.travel': unknown slot 'topik'; slots in en: topic, audience" in line, line


@pytest.mark.parametrize("argv,fragment", [
    (["num_prompts=0"], "key 'num_prompts': Input should be greater than or equal to 1 (got 0)"),
    (["num_prompts=-3"], "key 'num_prompts': Input should be greater than or equal to 1"),
    (["languages=[vi,fr]"], "key 'languages': Input should be 'vi' or 'en' (got 'fr')"),
    (["num_prompts=100000"], "prompt_templates.yaml gives only 7390 template x filler combinations in vi, en"),
    (["method=self_instruct"], "key 'model_name_or_path': required for method=self_instruct"),
    (["templates={dir}/broken.yaml"], "broken.yaml: line 3: invalid YAML"),
    (["templates={dir}/other.yaml"], "other.yaml: field 'extends': expected 'default' (or leave it out), got 'mine'"),
    (["output={dir}"], "is a directory; give a file name"),
    (["method=self_instruct", "model_name_or_path={dir}/no-model", "seeds={dir}/empty.jsonl"],
     "empty.jsonl: file is empty (no records)"),
    (["method=self_instruct", "model_name_or_path={dir}/no-model", "seeds={dir}/english.jsonl", "languages=vi"],
     "seeds: {dir}/english.jsonl: no seed instruction in vi"),
    (["method=self_instruct", "model_name_or_path={dir}/no-model", "seeds={dir}/english.jsonl", "languages=en"],
     "model_name_or_path: '{dir}/no-model': no such directory"),
])
def test_bad_input_is_one_line_before_any_model_loads(tmp_path, capsys, argv, fragment):
    (tmp_path / "broken.yaml").write_text("slots:\n  vi: [a\n", encoding="utf-8")
    (tmp_path / "other.yaml").write_text("extends: mine\n", encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    write_jsonl(tmp_path / "english.jsonl", [{"prompt": "Name three rivers in Asia."}])
    argv = [a.format(dir=tmp_path) for a in argv]
    line = _one_line(capsys, argv if any(a.startswith("output=") for a in argv) else
                     [*argv, f"output={tmp_path / 'prompts.jsonl'}"])
    assert fragment.format(dir=tmp_path) in line, line
    assert not (tmp_path / "prompts.jsonl").exists()


def _check_kept(rows, seeds, threshold, min_words, max_words, languages):
    """Every kept instruction passes each filter, recomputed here; and none is as close as `threshold`
    (ROUGE-L by the independent LCS) to a seed or to another kept one."""
    banned = [words(p) for p in BANNED_WORDS]
    for k, row in enumerate(rows):
        text, tokens = row["prompt"], words(row["prompt"])
        assert min_words <= len(tokens) <= max_words and text[0].isalpha(), text
        assert not any(tokens[i:i + len(b)] == b for b in banned for i in range(len(tokens))), text
        assert detect_language(text) in languages and row["language"] == detect_language(text)
        for other in seeds + [r["prompt"] for r in rows[:k]]:
            assert _key(other) != _key(text) and _f(text, other) < threshold, (text, other)


def test_self_instruct_keeps_only_new_instructions_that_pass_every_filter():
    seeds = {"en": ["Name three rivers in Asia.", "Explain how a rainbow forms."],
             "vi": ["Kể tên ba con sông ở châu Á.", "Giải thích cầu vồng hình thành thế nào."]}
    script = [  # one continuation per request, requests alternating en, vi
        (" Name three rivers in Asia, please.\nTask 4: Draw a map of Hanoi.\nTask 5: Describe the water cycle "
         "for a child.\n\nTask 6: this comes after the blank line", True),
        (" Hãy vẽ bản đồ Hà Nội.\nNhiệm vụ 4: Viết một bài thơ ngắn về mùa thu.\nNhiệm vụ 5: 123 là số gì", True),
        (" describe the  Water cycle for a child.\nTask 4: Hi.\nTask 5: Xin chào các bạn, hôm nay thế nào?", True),
        (" Viết một bài thơ ngắn về mùa thu nhé\nNhiệm vụ 4: Liệt kê năm loại trái cây nhiệt đới và", False),
    ]
    calls = []

    def scripted(requests, round_index):
        calls.append(requests)
        return script[2 * round_index:2 * round_index + 2]

    run = self_instruct(scripted, seeds, num_prompts=10, filters=InstructionFilter(("en", "vi"), 4, 30),
                        max_similarity=0.7, seeds_per_prompt=2, generated_per_prompt=1, requests_per_round=2,
                        max_rounds=2, seed=0)
    assert [p.text for p in run.kept] == ["Describe the water cycle for a child.", "Viết một bài thơ ngắn về mùa thu.",
                                          "Xin chào các bạn, hôm nay thế nào?"]
    assert dict(run.dropped) == {"similar": 2, "duplicate": 1, "banned_word": 2, "non_letter_start": 1, "length": 1,
                                "cut_off": 1}
    assert run.generated == len(run.kept) + sum(run.dropped.values()) == 11 and run.rounds == 2
    # the second round shows an instruction kept in the first, in its own language
    assert "Describe the water cycle for a child." in calls[1][0] and "Task 4:" in calls[1][0]
    assert calls[1][1].startswith("Hãy nghĩ ra một loạt nhiệm vụ:\nNhiệm vụ 1:")
    rows = [{"prompt": p.text, "language": p.language} for p in run.kept]
    _check_kept(rows, seeds["en"] + seeds["vi"], 0.7, 4, 30, ("en", "vi"))


def test_self_instruct_on_the_tiny_model_through_the_command_line(tmp_path, tiny_model, caplog):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": p} for p in (
        "Name a river.", "Define AI.", "Thủ đô ở đâu?", "Chào bạn nhé.")])
    out = tmp_path / "si.jsonl"
    # The tiny model writes noise that seldom ends: lenient filters so that a few are kept at all.
    with caplog.at_level("INFO", logger="vietnamese_ai"):
        assert main(["feedback", "prompts", "method=self_instruct", f"model_name_or_path={tiny_model}",
                     f"seeds={seeds}", f"output={out}", "num_prompts=200", "max_rounds=3", "batch_size=16",
                     "max_new_tokens=24", "min_words=1", "max_similarity=0.5", "seeds_per_prompt=2",
                     "temperature=1.0", "top_p=1.0", "disable_tqdm=true"]) == 0
    rows = read_jsonl(out)
    assert rows and all(r["source"] == "self_instruct" and len(r["shown"]) >= 2 for r in rows)
    _check_kept(rows, ["Name a river.", "Define AI.", "Thủ đô ở đâu?", "Chào bạn nhé."], 0.5, 1, 150, ("vi", "en"))
    [summary] = [m for m in caplog.messages if m.startswith("feedback prompts (self_instruct)")]
    generated = int(summary.split(" of ")[1].split()[0])
    dropped = sum(int(part.split()[-1]) for part in summary.split("dropped: ")[1].split(";")[0].split(", "))
    assert summary.startswith(f"feedback prompts (self_instruct): {len(rows)} kept (asked for 200) of {generated} "
                              f"generated (3 rounds); dropped: ") and generated == len(rows) + dropped, summary


def test_the_command_line_summary_line(tmp_path, caplog):
    out = tmp_path / "p.jsonl"
    with caplog.at_level("INFO", logger="vietnamese_ai"):
        assert main(["feedback", "prompts", "num_prompts=20", f"output={out}"]) == 0
    [summary] = [m for m in caplog.messages if m.startswith("feedback prompts")]
    assert summary.startswith("feedback prompts (templates): 20 kept of 20 generated (7390 combinations); dropped: "
                              "none; languages: en 10, vi 10; distinct-1 0."), summary
    assert summary.endswith(f"written to {out}") and len(read_jsonl(out)) == 20


def test_a_pipeline_stage_writes_prompts_that_feedback_generate_reads(tmp_path, tiny_model, caplog):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""
output_dir: {tmp_path / 'run'}
stages:
  prompts:
    command: feedback prompts
    method: templates
    num_prompts: 4
  candidates:
    command: feedback generate
    model_name_or_path: {tiny_model}
    prompts: ${{prompts.output}}
    temperatures: [1.0]
    num_samples: 1
    max_new_tokens: 4
    disable_tqdm: true
""", encoding="utf-8")
    caplog.set_level("INFO", logger="vietnamese_ai")
    assert main(["pipeline", "run", str(path)]) == 0
    prompts = read_jsonl(tmp_path / "run" / "prompts" / "prompts.jsonl")
    candidates = read_jsonl(tmp_path / "run" / "candidates" / "candidates.jsonl")
    assert len(prompts) == 4 and sorted(c["prompt"][0]["content"] for c in candidates) == \
        sorted(p["prompt"] for p in prompts)
    assert "[pipeline] prompts: feedback prompts (templates): 4 kept of 4 generated" in caplog.text   # its summary
