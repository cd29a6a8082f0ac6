"""Write bench/data/arith.jsonl: single-digit additions and subtractions, which SmolLM2-135M-Instruct gets
right some of the time (the README's real-model table). Fixed seed: rerunning rewrites the same file.

    python bench/arith_task.py [--seed 0] [--out bench/data/arith.jsonl]

Grade with the jsonl task's `number` grader (the model answers in prose, e.g. "13 + 14 = 27").
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def problems(seed: int) -> list[dict]:
    """Every single-digit sum a + b and difference a - b >= 0, each asked two ways, in a fixed shuffled order."""
    rows = []
    for a in range(1, 10):
        for b in range(1, 10):
            rows += [(f"What is {a} + {b}?", a + b), (f"What is {a} plus {b}?", a + b)]
            if a >= b:
                rows += [(f"What is {a} - {b}?", a - b), (f"What is {a} minus {b}?", a - b)]
    random.Random(seed).shuffle(rows)
    return [{"id": f"arith{i}", "prompt": q, "answer": str(ans)} for i, (q, ans) in enumerate(rows)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "arith.jsonl")
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        rows = problems(args.seed)
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {args.out} ({len(rows)} problems)")


if __name__ == "__main__":
    main()
