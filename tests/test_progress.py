"""Progress without a terminal: a plain line every few seconds, with the step, the pace and the time left."""

import io

from vietnamese_ai.progress import LineProgress, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_every_ten_seconds_with_the_pace_and_the_time_left():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(total=10, initial=2, desc="sft", every=10.0, stream=out, clock=clock)
    for _ in range(4):   # 4 steps of 3 s: a line once 10 s have passed since the start (at step 6, 12 s)
        clock.now += 3.0
        bar.set_postfix(loss="0.5000")
        bar.update(1)
    assert out.getvalue() == "[sft] step 6/10 (60%), 3.00 s/step, about 12s left; loss=0.5000\n"
    clock.now += 3.0
    bar.update(1)      # 3 s since the last line: nothing
    clock.now += 1.0
    bar.close()        # the end always shows where it stopped
    assert out.getvalue().splitlines()[-1] == "[sft] step 7/10 (70%), 3.20 s/step, about 10s left; loss=0.5000"
    bar.close()
    assert len(out.getvalue().splitlines()) == 2


def test_disabled_progress_prints_nothing(capsys):
    bar = progress(5, 0, "x", disable=True)
    bar.update(1), bar.set_postfix(loss=1), bar.close()
    assert capsys.readouterr() == ("", "")


def test_a_run_of_a_few_seconds_stays_silent():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(total=3, desc="sft", stream=out, clock=clock)
    for _ in range(3):
        clock.now += 1.0
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_generation_shows_its_batches_in_a_log(tiny_model, monkeypatch, capsys):
    """Sampling (evaluate, feedback generate) prints the same lines as training when stderr is a file."""
    import functools

    import vietnamese_ai.progress as progress_module
    from vietnamese_ai.models.generation import sample
    from vietnamese_ai.models.loading import load_causal_lm, load_tokenizer

    monkeypatch.setattr(progress_module, "LineProgress", functools.partial(LineProgress, every=0.0))
    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    capsys.readouterr()
    sample(model, tokenizer, ["a", "bb", "ccc"], max_new_tokens=2, batch_size=1, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == ["[generate] batch 1/3 (33%)", "[generate] batch 2/3 (67%)",
                                                     "[generate] batch 3/3 (100%)"]
    sample(model, tokenizer, ["a"], max_new_tokens=2, progress=False)
    assert capsys.readouterr().err == ""
