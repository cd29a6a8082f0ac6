"""Cost of each sampler per problem: tokens generated and seconds, and latency relative to plain sampling.

Methods (paper defaults scaled down to CPU size, all at alpha = 4):
  plain        temperature 1, one pass (the reference latency)
  mh           Karan & Du Metropolis-Hastings: N = 10 MH steps per block, B = T/16
  smc          Power-SMC: 16 particles, ESS threshold 0.5 (the paper uses 64; 64 is also timed)
  scalable     Ji et al.: K = 4 candidates, M = 4 rollouts, H = 8 tokens (paper scale: 8 / 8 / 192)
  plain, 16/64 rows   plain sampling of 16 / 64 samples per problem: the same batch SMC decodes, so the
               difference to SMC is the sampler's own overhead (weights, ESS, resampling, 1-token calls)

Models, in one run:
  gym          the shipped gym model (trained; its own EOS) on gym problems, if it has been trained;
               otherwise a random small Llama (vocab 2048, 256 hidden, 4 layers), EOS suppressed
  qwen-shaped  Qwen2.5-1.5B's vocabulary (151,936 ids, tied embeddings) and head layout (6 query heads
               per KV head), scaled down to hidden 192, 2 layers, 6/1 heads, MLP 1024; random weights,
               EOS suppressed (eos_token_id = an id outside the vocabulary) for every method alike,
               so every completion has exactly T tokens (design/engine.md: random-weight EOS is a lottery);
               T = 48 on the gym model, 16 on the Qwen-shaped one (its head dominates CPU time)

  --model M    instead of the two above: a real model (hub name, folder, .gguf file, or smollm2) with its own
               EOS, on chat prompts from bench/data/arith.jsonl (T = --max-new-tokens)

    python bench/samplers.py            # CPU, about 2.5 minutes on 2 cores (more when the box is shared)
    python bench/samplers.py --model smollm2 --max-new-tokens 24
"""

from __future__ import annotations

import argparse
import os
import random
import time

# on a shared CPU box, OpenMP threads that spin while waiting make torch 10-50x slower; let them sleep
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import powersample  # noqa: E402
from powersample.engine.loading import load_engine  # noqa: E402
from powersample.errors import PowerSampleError  # noqa: E402

PLAIN = "plain (T=1)"
METHODS = {  # name -> (method, options)
    PLAIN: ("temperature", dict(temperature=1.0)),
    "mh (N=10, B=T/16)": ("power", dict(mcmc_steps=10)),
    "smc (16 particles)": ("smc", dict(particles=16, ess_threshold=0.5)),
    "smc (64 particles)": ("smc", dict(particles=64, ess_threshold=0.5)),
    "scalable (K=4,M=4,H=8)": ("scalable", dict(top_k_candidates=4, rollouts=4, horizon=8)),
    # plain sampling of as many rows as SMC decodes: what the particles alone cost on this machine
    "plain, 16 rows/problem": ("temperature", dict(temperature=1.0, num_samples=16)),
    "plain, 64 rows/problem": ("temperature", dict(temperature=1.0, num_samples=64)),
}


def qwen_shaped():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=192, intermediate_size=1024, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=1, max_position_embeddings=32768,
                      tie_word_embeddings=True, rope_theta=1000000.0)
    return Qwen2ForCausalLM(cfg).eval()


def small_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaForCausalLM(cfg).eval()


def gym_setup(n: int):
    """(engine, prompts, label): the trained gym model on held-out gym problems, or a random stand-in."""
    try:
        from powersample import gym

        engine = load_engine("gym", device="cpu")
        texts = [p.prompt for p in gym.eval_problems(n, seed=0)]
        return engine, texts, "gym model (trained; its own EOS, so lengths differ by method)"
    except PowerSampleError:
        engine = load_engine(small_llama(), device="cpu", eos_token_id=2048)  # an id it never draws
        return engine, _random_prompts(2048, n, 16), \
            "gym model NOT TRAINED YET -> random small Llama (vocab 2048, h256, 4 layers), EOS suppressed"


def model_setup(name: str, n: int):
    """(engine, prompts, label): a real model on the first n arithmetic problems, as chat turns if it has a
    chat template (the sampler then sees exactly what `eval --chat` gives it)."""
    import json
    from pathlib import Path

    from powersample.api import _encode

    engine = load_engine(name, device="cpu")
    lines = (Path(__file__).parent / "data" / "arith.jsonl").read_text().splitlines()[:n]
    chat = bool(getattr(engine.tokenizer, "chat_template", None))
    prompts = [_encode(engine, json.loads(x)["prompt"], chat, i) for i, x in enumerate(lines)]
    cfg = engine.model.config
    return engine, prompts, f"{name}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab " \
        f"{cfg.vocab_size}, its own EOS, {'chat' if chat else 'plain'} prompts"


def _random_prompts(vocab: int, n: int, length: int) -> list[list[int]]:
    g = random.Random(0)
    return [[g.randrange(2, vocab) for _ in range(length)] for _ in range(n)]


def bench(engine, prompts, T: int, label: str) -> list[tuple]:
    common = dict(alpha=4.0, max_new_tokens=T, block_size=max(1, T // 16), seed=0, batch_size=len(prompts))
    powersample.sample(engine, prompts[:1], "temperature", **{**common, "max_new_tokens": 4})  # warm up
    rows = []
    for name, (method, opts) in METHODS.items():
        engine.slots_fed, engine.slots_drawn = 0, 0  # occupancy of this method's forward passes
        t0 = time.perf_counter()
        res = powersample.sample(engine, prompts, method, **common, **opts)
        seconds = (time.perf_counter() - t0) / len(prompts)
        tokens = sum(r.tokens_generated for r in res) / len(prompts)
        length = sum(len(r.token_ids) for r in res) / len(res)
        rows.append((label, name, length, tokens, seconds, engine.occupancy()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=2, help="prompts per model, run as one batch")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="T on the gym model")
    ap.add_argument("--qwen-max-new-tokens", type=int, default=16,
                    help="T on the Qwen-shaped model (its 151,936-wide head dominates CPU time)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="bench this real model instead of the gym and Qwen-shaped ones")
    ap.add_argument("--methods", default=None, help="only the methods whose names start with one of these "
                    "(comma-separated, e.g. plain,smc)")
    ap.add_argument("--gym-only", action="store_true", help="skip the Qwen-shaped model")
    args = ap.parse_args()
    if args.methods:
        wanted = tuple(args.methods.split(","))
        for name in [m for m in METHODS if not m.startswith(wanted) and m != PLAIN]:
            del METHODS[name]
    torch.set_num_threads(args.threads)
    if args.model:
        engine, prompts, label = model_setup(args.model, args.problems)
        print(f"{label}; {args.problems} problems in one batch, T = {args.max_new_tokens}, alpha = 4, CPU "
              f"({args.threads} threads), torch {torch.__version__}")
        return print_table(bench(engine, prompts, args.max_new_tokens, args.model))

    gym_engine, gym_prompts, gym_label = gym_setup(args.problems)
    print(f"gym: {gym_label}")
    print("qwen-shaped: Qwen2 vocab 151936 (tied), hidden 192, 2 layers, 6 heads / 1 KV head, MLP 1024, "
          "random weights, EOS suppressed")
    print(f"{args.problems} problems per model in one batch, T = {args.max_new_tokens} (gym) / "
          f"{args.qwen_max_new_tokens} (qwen-shaped), alpha = 4, CPU ({args.threads} threads), "
          f"torch {torch.__version__}")
    rows = bench(gym_engine, gym_prompts, args.max_new_tokens, "gym")
    if args.gym_only:
        return print_table(rows)
    qwen = load_engine(qwen_shaped(), device="cpu", eos_token_id=151936)  # EOS outside the vocabulary: never
    rows += bench(qwen, _random_prompts(151936, args.problems, 16), args.qwen_max_new_tokens, "qwen-shaped")
    print_table(rows)


def print_table(rows: list[tuple]) -> None:
    # x plain: latency over plain sampling's; per token: the same per output token (lengths differ on gym);
    # occupancy: share of the row-slots fed to forward passes that drew a token
    print(f"\n| {'model':<12}| {'method':<24}| {'length':>7}| {'tokens/problem':>15}| {'s/problem':>10}"
          f"| {'x plain':>8}| {'x plain/token':>14}| {'occupancy':>10}|")
    print(f"|{'-' * 13}|{'-' * 25}|{'-' * 8}|{'-' * 16}|{'-' * 11}|{'-' * 9}|{'-' * 15}|{'-' * 11}|")
    plain = {label: (s, n) for label, name, n, _, s, _ in rows if name == PLAIN}
    for label, name, length, tokens, seconds, occupancy in rows:
        ps, pn = plain[label]
        print(f"| {label:<12}| {name:<24}| {length:>7.1f}| {tokens:>15.0f}| {seconds:>10.3f}"
              f"| {seconds / ps:>8.1f}| {(seconds / max(length, 1)) / (ps / max(pn, 1)):>14.1f}"
              f"| {occupancy:>10.1%}|")


if __name__ == "__main__":
    main()
