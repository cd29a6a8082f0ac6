"""Math answer equivalence with the `math-verify` library (Hugging Face).

`math_equal(gold, answer)` parses both as LaTeX and compares them symbolically and numerically, so
\\frac{1}{2} = 0.5 and 3\\sqrt{2} = 3*sqrt(2). The gold answer is wrapped in $...$ and the extracted
answer in \\boxed{...}, the forms math-verify's default extraction expects.

Timeouts: math-verify bounds each parse and comparison with SIGALRM, which only works in a process's
main thread (elsewhere it raises ValueError). So in the main thread we pass `timeout` through, and in
any other thread we switch math-verify's timeouts off and rely on the caller's: the runner grades in
worker processes whose main thread runs this code, with a watchdog that kills a stuck worker.
A timeout or crash is returned as a wrong answer with `error=True` and the cause, never raised.

Around math-verify, three things it does not do for final answers:
- a sentence's punctuation after the answer (`3.`, `12,`) is dropped;
- a multiple-choice gold (`\\text{(C)}`) is compared by letter with the letter the answer starts with
  (`\\text{(C) } 5` is C; math-verify would read it as the product c*5);
- math-verify drops units, so when both answers name one after a number (`5.4\\text{ cents}`) the units
  must agree (after plurals and common abbreviations); an answer without a unit is still judged on
  its number alone.
"""

from __future__ import annotations

import logging
import re
import threading

from .base import Grade

log = logging.getLogger(__name__)


def math_equal(gold: str, answer: str, timeout: int = 5) -> Grade:
    """Whether `answer` (an extracted final answer, LaTeX) is mathematically equal to `gold`."""
    try:
        from math_verify import parse, verify
        from math_verify.errors import TimeoutException
    except ImportError as e:  # a declared dependency; only a broken install gets here
        raise ImportError("math grading needs math-verify: pip install 'math-verify[antlr4_13_2]'") from e

    gold, answer = _trim(gold), _trim(answer)
    letter = _choice(gold, whole=True)
    if letter is not None and _choice(answer) is not None:
        ok = _choice(answer) == letter
        return Grade(ok, answer, "same choice" if ok else "different choice")
    gold_unit, answer_unit = _unit(gold), _unit(answer)
    if gold_unit and answer_unit and gold_unit != answer_unit:
        return Grade(False, answer, f"different unit ({answer_unit}, not {gold_unit})")
    seconds = timeout if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=seconds, raise_on_error=True)
        if not gold_parsed:
            return Grade(False, answer, f"gold answer {gold!r} could not be parsed", error=True)
        pred_parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=seconds, raise_on_error=True)
        if not pred_parsed:
            return Grade(False, answer, "answer could not be parsed")
        ok = verify(gold_parsed, pred_parsed, timeout_seconds=seconds, raise_on_error=True)
    except TimeoutException:  # a BaseException in math-verify, so it needs its own clause
        return Grade(False, answer, f"math-verify timed out after {timeout}s", error=True)
    except Exception as e:  # odd LaTeX can crash sympy in many ways; a run must go on
        log.debug("math-verify failed on %r vs %r", answer, gold, exc_info=True)
        return Grade(False, answer, f"math-verify error: {type(e).__name__}: {str(e)[:200]}", error=True)
    return Grade(bool(ok), answer, "equivalent" if ok else "not equivalent")


def _trim(s: str) -> str:
    """Drop surrounding space and a trailing sentence mark: `3.` is 3, `12,` is 12."""
    return re.sub(r"(?:\s|\\[ ,;!])*[.,;:]*(?:\s|\\[ ,;!])*$", "", s.strip()) or s.strip()


_CHOICE = re.compile(r"^\s*(?:\\(?:text|textbf|mathrm)\s*\{\s*)?\(?\s*([A-E])\s*\)")


def _choice(s: str, whole: bool = False) -> str | None:
    """The option letter an answer starts with, written `(C)` or `\\text{(C)}` (or a bare `C`);
    with `whole`, only when the letter is the entire answer (a gold answer)."""
    bare = re.fullmatch(r"\s*(?:\\(?:text|textbf|mathrm)\s*\{\s*)?\(?\s*([A-E])\s*\)?\s*\}?\s*", s)
    if bare:
        return bare.group(1)
    m = None if whole else _CHOICE.match(s)
    return m.group(1) if m else None


_UNIT = re.compile(r"[\d}]\s*\\(?:text|mbox|mathrm)\s*\{\s*([A-Za-z][A-Za-z ]*?)\s*\}\s*(\^\s*\{?\s*\d\s*\}?)?")
_UNIT_NAMES = {"cm": "centimeter", "mm": "millimeter", "km": "kilometer", "m": "meter", "in": "inch",
               "ft": "foot", "feet": "foot", "mi": "mile", "deg": "degree", "sec": "second", "s": "second",
               "min": "minute", "hr": "hour", "h": "hour", "g": "gram", "kg": "kilogram", "lb": "pound",
               "mph": "mile per hour", "sq": "square"}


def _unit(s: str) -> str | None:
    """The unit written after the last number of an answer (`864 \\mbox{ inches}^2` -> "inch^2")."""
    found = list(_UNIT.finditer(s))
    if not found:
        return None
    words, power = found[-1].group(1).lower().split(), found[-1].group(2)
    words = [_UNIT_NAMES.get(w, w) for w in words]
    words = [w[:-2] if w.endswith(("ches", "shes")) else w[:-1] if w.endswith("s") and len(w) > 3 else w
             for w in words]
    if words and words[0] == "square":
        words, power = words[1:], "2"
    if words and words[0] == "cubic":
        words, power = words[1:], "3"
    unit = " ".join(words)
    return unit + "^" + re.sub(r"\D", "", power) if power else unit
