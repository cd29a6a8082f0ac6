"""Math answer equivalence with the `math-verify` library (Hugging Face).

`math_equal(gold, answer)` parses both as LaTeX and compares them symbolically and numerically, so
\\frac{1}{2} = 0.5 and 3\\sqrt{2} = 3*sqrt(2). The gold answer is wrapped in $...$ and the extracted
answer in \\boxed{...}, the forms math-verify's default extraction expects.

Timeouts: math-verify bounds each parse and comparison with SIGALRM, which only works in a process's
main thread (elsewhere it raises ValueError). So in the main thread we pass `timeout` through, and in
any other thread we switch math-verify's timeouts off and rely on the caller's: the runner grades in
worker processes whose main thread runs this code, with a watchdog that kills a stuck worker.
A timeout or crash is returned as a wrong answer with `error=True` and the cause, never raised.
"""

from __future__ import annotations

import logging
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
