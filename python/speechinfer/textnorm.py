"""Text as the TTS voices read it: one normalisation shared by ``si.Pipeline`` and training.

Numbers are spelled out in English words (``3.5`` → ``three point five``, ``1,024`` →
``one thousand twenty-four``), curly quotes and dashes become ASCII, double quotes are dropped
(they are not spoken), the text is lower-cased and whitespace collapsed.
"""

import re

_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_NUMBER = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_TYPOGRAPHY = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)


def number_words(n: int) -> str:
    """Spell a non-negative integer below 10**15 in English words (``21`` → ``twenty-one``)."""
    if n < 0 or n >= 10**15:
        raise ValueError(f"cannot spell {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + (" " + number_words(rest) if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            rest = n % scale
            return f"{number_words(n // scale)} {name}" + (" " + number_words(rest) if rest else "")
    raise AssertionError("unreachable")


def _spell_number(match: re.Match[str]) -> str:
    whole, _, fraction = match.group().replace(",", "").partition(".")
    if len(whole) > 15 or (len(whole) > 1 and whole.startswith("0")):
        words = " ".join(_ONES[int(d)] for d in whole)
    else:
        words = number_words(int(whole))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    text, start, end = match.string, match.start(), match.end()
    before = " " if start > 0 and text[start - 1].isalpha() else ""
    after = " " if end < len(text) and text[end].isalpha() else ""
    return before + words + after


def spoken_form(text: str) -> str:
    """Return ``text`` lower-cased with numbers in words, ASCII quotes, no double quotes."""
    text = _NUMBER.sub(_spell_number, text.translate(_TYPOGRAPHY))
    return " ".join(text.replace('"', "").lower().split())
