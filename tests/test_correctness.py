"""Answer-vs-reference correctness (evaluation.correctness): every expected number is derived by hand
in a comment, in Vietnamese and English."""

import unicodedata

import pytest

from vietnamese_ai.data.text import detect_language
from vietnamese_ai.errors import DataError
from vietnamese_ai.evaluation.correctness import (
    contains,
    correctness_summary,
    exact_match,
    normalise,
    reference_list,
    token_f1,
)
from vietnamese_ai.evaluation.intervals import wilson

# --- normalise ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, language, expected", [
    ("The cat sat on a mat.", "en", "cat sat on mat"),            # articles and the full stop go
    ("The theatre and a banana", "en", "theatre and banana"),     # only whole-word articles
    ("Mà, MA!", "vi", "mà ma"),                                   # diacritics stay: two different words
    ("ĐÀ NẴNG", "vi", "đà nẵng"),                                 # "đ" stays "đ", not "d"
    ("«Xin chào» — bạn…", "vi", "xin chào bạn"),                  # Unicode punctuation (Pi, Pf, Pd, Po)
    ("An toàn là bạn", "vi", "an toàn là bạn"),                   # "an" is a Vietnamese word: kept
    ("An toàn là bạn", "en", "toàn là bạn"),                      # ... and an English article
    ("Price: $5 + tax", "en", "price $5 + tax"),                  # symbols (S*) are not punctuation
    ("  a\tb\n\nc  ", "vi", "a b c"),                             # whitespace collapsed
])
def test_normalise(text, language, expected):
    assert normalise(text, language) == expected


def test_normalise_composes_decomposed_diacritics():
    decomposed = unicodedata.normalize("NFD", "Hà Nội")
    assert decomposed != "Hà Nội" and normalise(decomposed, "vi") == "hà nội"


# --- exact_match -------------------------------------------------------------------------------------

def test_exact_match():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0   # article, case, full stop
    assert exact_match("Hà Nội!", "hà nội", "vi") == 1.0
    assert exact_match("ma", "mà", "vi") == 0.0                       # ghost is not "but"
    assert exact_match("An toàn", "toàn", "vi") == 0.0                # "an" is not dropped in Vietnamese
    assert exact_match("Thủ đô là Hà Nội", "Hà Nội", "vi") == 0.0     # longer answer: contains, not EM


# --- contains ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, reference, language, expected", [
    ("Thủ đô là Hà Nội.", "Hà Nội", "vi", 1.0),
    ("hanoi", "ha", "en", 0.0),                      # not inside another word
    ("Tôi ở Hanoi", "Ha", "vi", 0.0),
    ("Bà ngoại tôi", "ngoại", "vi", 1.0),            # a whole syllable in the middle
    ("Tôi thấy mà", "ma", "vi", 0.0),                # diacritics count
    ("Nội Hà", "Hà Nội", "vi", 0.0),                 # the words in order
    ("It is Paris, France.", "paris france", "en", 1.0),   # punctuation between the words removed
    ("The end", "The", "en", 0.0),                   # reference normalises to "": never contained
    ("", "The", "en", 0.0),                          # ... not even in an empty answer
])
def test_contains_whole_words(answer, reference, language, expected):
    assert contains(answer, reference, language) == expected


# --- token_f1 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, reference, language, expected", [
    # thủ đô là hà nội (5) vs hà nội (2): shared 2, P = 2/5, R = 2/2, F1 = 2·0.4·1/1.4 = 4/7
    ("thủ đô là Hà Nội", "Hà Nội", "vi", 4 / 7),
    # big red dog (3) vs red dog barked (3), articles gone: shared 2, P = R = 2/3, F1 = 2/3
    ("the big red dog", "a red dog barked", "en", 2 / 3),
    # hà hà nội vs hà nội: shared min(2,1) + 1 = 2, P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 0.8
    ("hà hà nội", "hà nội", "vi", 0.8),
    # hà hà nội vs hà hà: shared min(2,2) = 2 (a bag, not a set), P = 2/3, R = 2/2, F1 = 0.8
    ("hà hà nội", "hà hà", "vi", 0.8),
    ("ma", "mà", "vi", 0.0),                        # no shared token
    ("", "", "vi", 1.0),                            # both empty
    ("the", "a", "en", 1.0),                        # both empty after normalising
    ("x", "", "en", 0.0),                           # one empty
    ("", "x", "en", 0.0),
])
def test_token_f1(answer, reference, language, expected):
    assert token_f1(answer, reference, language) == pytest.approx(expected)


# --- several references: the best one counts ---------------------------------------------------------

@pytest.mark.parametrize("references", [["Sài Gòn", "Hà Nội", "thủ đô Hà Nội"], ["thủ đô Hà Nội", "Hà Nội", "Sài Gòn"]])
def test_several_references_take_the_max(references):
    answer = "Thủ đô là Hà Nội"
    # F1: Sài Gòn 0; hà nội 4/7; thủ đô hà nội (4): shared 4, P = 4/5, R = 1, F1 = 1.6/1.8 = 8/9
    assert token_f1(answer, references, "vi") == pytest.approx(8 / 9)
    assert contains(answer, references, "vi") == 1.0
    assert exact_match("Sài Gòn", references, "vi") == 1.0
    assert exact_match(answer, references, "vi") == 0.0


# --- reference_list ----------------------------------------------------------------------------------

def test_reference_list_accepts_a_string_or_a_list():
    assert reference_list("Hà Nội", "f") == ["Hà Nội"]
    assert reference_list(["Hà Nội", "Hanoi"], "f") == ["Hà Nội", "Hanoi"]


@pytest.mark.parametrize("value, got", [
    (3, "got int 3"),
    ([], "got an empty list"),
    ("", "got an empty string"),
    ("  \n", "got an empty string"),
    (["Hà Nội", 2], "got int 2 at position 1"),
    (["Hà Nội", " "], "got an empty string at position 1"),
    ({"text": "x"}, "got dict {'text': 'x'}"),
])
def test_reference_list_rejects_anything_else(value, got):
    with pytest.raises(DataError) as caught:
        reference_list(value, "eval.jsonl: line 3")
    message = str(caught.value)
    assert message == f"eval.jsonl: line 3: field 'reference': expected a string or a list of strings, {got}"
    assert "\n" not in message


# --- correctness_summary -----------------------------------------------------------------------------

def _row(prompt, answer, reference=None):
    row = {"prompt_text": prompt, "answers": {"base": "wrong on purpose", "tuned": answer}}
    if reference is not None:
        row["reference"] = reference
    return row


ROWS = [
    # vi: "thủ đô là hà nội" vs "hà nội": EM 0, contains 1, F1 4/7 (above)
    _row("Thủ đô của Việt Nam là gì?", "Thủ đô là Hà Nội.", ["Hà Nội"]),
    # vi: EM 1, contains 1, F1 1
    _row("Ai viết Truyện Kiều?", "Nguyễn Du", "Nguyễn Du"),
    # vi: "con mèo" equals the second reference: EM 1, contains 1, F1 1
    _row("Con vật nào kêu meo meo?", "Con mèo", ["mèo", "con mèo"]),
    # en: "capital is paris" vs "paris": EM 0, contains 1, F1 P = 1/3, R = 1 -> 0.5;
    #     vs "paris france": P = 1/3, R = 1/2 -> 0.4; max 0.5
    _row("What is the capital of France?", "The capital is Paris.", ["Paris", "paris france"]),
    # en: EM 0, contains 0, F1 0
    _row("Who wrote Hamlet?", "Marlowe", "Shakespeare"),
    # no reference, or a null one: left out
    _row("Kể một chuyện cười", "Hà Nội"),
    {**_row("Say hi", "hi"), "reference": None},
]


def test_correctness_summary_per_language_and_all():
    summary = correctness_summary(ROWS, "tuned", detect_language)
    assert list(summary) == ["en", "vi", "all"]
    expected = {
        "vi": {"exact_match": 2 / 3, "contains": 1.0, "token_f1": (4 / 7 + 1 + 1) / 3, "answers": 3},
        "en": {"exact_match": 0.0, "contains": 0.5, "token_f1": (0.5 + 0) / 2, "answers": 2},
        # the mean over the 5 answers, not of the two languages' means (which would give EM 1/3):
        # (0 + 1 + 1 + 0 + 0) / 5, (1 + 1 + 1 + 1 + 0) / 5, (4/7 + 1 + 1 + 0.5 + 0) / 5 = 43/70
        "all": {"exact_match": 0.4, "contains": 0.8, "token_f1": 43 / 70, "answers": 5},
    }
    for language, metrics in expected.items():
        got = dict(summary[language])
        for rate in ("exact_match", "contains"):   # the rates' 95% Wilson intervals, from the counts
            assert got.pop(f"{rate}_ci95") == pytest.approx(wilson(round(metrics[rate] * metrics["answers"]),
                                                                   metrics["answers"]))
        assert got == pytest.approx(metrics), language


def test_correctness_summary_reads_the_named_model():
    summary = correctness_summary(ROWS, "base", detect_language)   # "wrong on purpose" everywhere
    assert summary["all"] == {"exact_match": 0.0, "exact_match_ci95": wilson(0, 5), "contains": 0.0,
                              "contains_ci95": wilson(0, 5), "token_f1": 0.0, "answers": 5}


def test_correctness_summary_without_references_is_empty():
    assert correctness_summary(ROWS[5:], "tuned", detect_language) == {}
    assert correctness_summary([], "tuned", detect_language) == {}


def test_correctness_summary_names_a_bad_reference():
    with pytest.raises(DataError, match=r"^evaluation row 2: field 'reference': expected .*got an empty list$"):
        correctness_summary([ROWS[0], _row("Hi", "hi", [])], "tuned", detect_language)
