"""Language-aware text helpers shared by every layer above data: Vietnamese folding (diacritics
removed), words, and telling Vietnamese from English. The rule scorers (feedback) and the safety
suites (evaluation) both read text this way.
"""

from __future__ import annotations

import re
import unicodedata

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
VIETNAMESE_LETTERS = set("ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ")


def fold(text: str) -> str:
    """Lowercase, without diacritics; đ becomes d.

    >>> fold("Đồ Ngốc")
    'do ngoc'
    """
    text = unicodedata.normalize("NFD", text.lower().replace("đ", "d"))
    return unicodedata.normalize("NFC", "".join(c for c in text if unicodedata.category(c) != "Mn"))


def words(text: str) -> list[str]:
    """Lowercase words, NFC-normalised.

    >>> words("Xin chào, bạn! I'm fine.")
    ['xin', 'chào', 'bạn', "i'm", 'fine']
    """
    return WORD.findall(unicodedata.normalize("NFC", text.lower()))


def detect_language(text: str) -> str:
    """'vi' if the text has Vietnamese letters or typical unaccented Vietnamese words, else 'en'."""
    lowered = unicodedata.normalize("NFC", text.lower())
    if any(c in VIETNAMESE_LETTERS for c in lowered):
        return "vi"
    common = {"khong", "cua", "la", "toi", "ban", "gi", "nhu", "nao", "duoc", "cho", "va", "mot"}
    tokens = words(lowered)
    return "vi" if tokens and sum(t in common for t in tokens) / len(tokens) > 0.2 else "en"
