"""Row occupancy and tokens/s of MH power sampling vs plain temperature sampling, in one run.

The workload is eval-shaped: 100 gym problems (3-digit additions), one MH chain each, with the demo's
T=48 and B=16 and the paper's N=10, queued on 64 engine rows; then plain temperature sampling of the
same problems on the same engine, in batches of 64 rows. Occupancy is the share of row-slots in forward passes that drew
a token that is kept or judged (an MH proposal's tokens are all judged); the rest are rows riding
along idle. tokens/s counts every drawn token (MH: rejected proposals too), per second of CPU time on
a CPU (see `measure`).

    python bench/occupancy.py                 # CPU, about a minute
    python bench/occupancy.py --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from powersample import gym, rng
from powersample.engine.loading import load_engine
from powersample.samplers.baselines import temperature_sample
from powersample.samplers.params import PowerParams, TemperatureParams
from powersample.samplers.power import power_sample

PROBLEMS, ROWS, T, B, N, ALPHA = 100, 64, 48, 16, 10, 4.0


def measure(engine, run, repeats: int = 1) -> tuple[float, float, float]:
    """(occupancy, tokens/s, seconds) of `run()` (which returns the tokens it drew), `repeats` times.

    On a CPU, seconds are this process's CPU time: one thread works, so that is its compute, and unlike
    wall time it does not count the time other programs on a shared machine take the core. On a GPU,
    wall time (the CPU waits for the device)."""
    clock = time.process_time if engine.device.type == "cpu" else time.perf_counter
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    engine.slots_fed, engine.slots_drawn = 0, 0
    t0 = clock()
    tokens = sum(run() for _ in range(repeats))
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = clock() - t0
    return engine.occupancy(), tokens / seconds, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the gym model is tiny: one thread is fastest
    engine = load_engine(gym.model_path(), device=args.device)
    problems = gym.eval_problems(PROBLEMS, seed=0)
    prompts = [engine.encode(p.prompt) for p in problems]
    seeds = [rng.derive_seeds(0, p.id) for p in problems]
    power = PowerParams(alpha=ALPHA, mcmc_steps=N, max_new_tokens=T, block_size=B)
    plain = TemperatureParams(temperature=1.0, max_new_tokens=T)

    def batched(sampler, params):  # plain decoding as eval runs it: batches of ROWS problems, one row each
        results = []
        for lo in range(0, PROBLEMS, ROWS):
            results += sampler(engine, prompts[lo: lo + ROWS], seeds[lo: lo + ROWS], params)
        return sum(r.tokens_generated for r in results)

    print(f"gym model, {PROBLEMS} problems, {ROWS} rows, T={T}, B={B}, N={N}, alpha={ALPHA}, {args.device}")
    # MH: all 100 chains queued on ROWS rows, continuously batched (power_sample's scheduler)
    mh = measure(engine, lambda: sum(r.tokens_generated for r in power_sample(engine, prompts, seeds, power,
                                                                              rows=ROWS)))
    pl = measure(engine, lambda: batched(temperature_sample, plain), repeats=5)  # it is short: average 5
    for name, (occ, tps, secs) in (("MH power", mh), ("plain", pl)):
        print(f"{name:<9} occupancy {occ:6.1%}   {tps:8.0f} tokens/s   {secs:6.1f} s")
    print(f"MH/plain tokens/s: {mh[1] / pl[1]:.2f}")


if __name__ == "__main__":
    main()
