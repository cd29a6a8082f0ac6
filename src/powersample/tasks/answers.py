"""Answer extractors: the last \\boxed{} of a completion, a multiple-choice letter, a final line.

Pure string functions: cheap enough to run on every checkpoint of every sample in the main process.
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")  # not \boxedfoo, but \boxed12 and \boxed 12 are boxes


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (or \\fbox{...}, or `\\boxed 5`) in `text`."""
    for m in reversed(list(_BOX.finditer(text))):
        content = _box_content(text, m.end())
        if content is not None and content.strip():
            return content.strip()
    return None


def _box_content(text: str, i: int) -> str | None:
    if i < len(text) and text[i] != "{":  # "\boxed 5", "\boxed12.": the argument runs to a space or $
        m = re.match(r" *([^\s$]+)", text[i:])
        if m is None:
            return None
        # without braces the box ends the sentence, so its punctuation is not part of the answer
        return m.group(1).rstrip(".,;:!?") or None
    if i >= len(text):
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "\\":  # an escaped brace (\{ \}) does not open or close the box
            continue
        if c == "{" and text[j - 1] != "\\":
            depth += 1
        elif c == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1: j]
    return None  # unclosed: the completion was cut off inside the box


# Multiple choice: most explicit forms first; within a form the LAST occurrence wins, since models
# often restate options before concluding.
_LETTER = r"\(?\s*([A-D])\s*\)?"
_CHOICE_PATTERNS = [  # the words are case-insensitive, the letter is not ("the answer is a ..." is no choice)
    re.compile(r"(?i:answer\s+is)\s*:?\s*(?i:option\s*)?\**" + _LETTER + r"(?![A-Za-z0-9])"),
    re.compile(r"(?i:answer)\s*:\s*\**(?i:option\s*)?" + _LETTER + r"(?![A-Za-z0-9])"),
    re.compile(r"\(([A-D])\)"),
    re.compile(r"(?<![A-Za-z0-9'])([A-D])(?![A-Za-z0-9'])"),
]


def choice_letter(text: str, letters: str = "ABCD") -> str | None:
    """The option letter a completion chooses: \\boxed{C}, "The answer is (C)", "Answer: C", "(C)", or
    the last standalone capital letter A-D, in that order of precedence."""
    boxed = last_boxed(text)
    if boxed is not None:
        m = re.fullmatch(r"\s*(?:\\text\{\s*)?\(?\s*([A-Za-z])\s*\)?(?:\s*\})?\s*(?:[.:)].*)?", boxed, re.S)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    for pattern in _CHOICE_PATTERNS:
        found = [m.group(1).upper() for m in pattern.finditer(text)]
        found = [f for f in found if f in letters]
        if found:
            return found[-1]
    return None


def final_line(text: str) -> str | None:
    """The boxed answer if there is one, else the last non-empty line (for exact-match grading)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def normalize_exact(s: str) -> str:
    """Exact-match normal form: no surrounding $ or spaces, inner whitespace collapsed, case folded,
    a trailing period dropped."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\s+", " ", s).casefold()
    return s[:-1] if s.endswith(".") else s
