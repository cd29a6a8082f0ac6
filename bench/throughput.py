"""Throughput of powersample's MH power sampler vs a reference-style implementation, in one run.

The reference is how public power-sampling code works: batch 1, one `model.generate` call per block
and per MH proposal, each re-running the whole prefix (no cache reuse), log-probs from the returned
logits. Ours: every chain of every prompt in one batch, KV cache of kept prefixes reused.

Both run the same algorithm (alpha, N, T, B) on the same random-weight model with EOS suppressed
(random weights draw EOS at random times, which would make run time a lottery: design/engine.md).
The reference runs on a subset of prompts (it is slow); per-prompt seconds and tokens/s are compared.

    python bench/throughput.py                      # CPU: small random Llama, 8 prompts
    python bench/throughput.py --device cuda        # GPU: random Qwen2.5-1.5B shape, 256 chains
    python bench/throughput.py --model smollm2      # a real model (any --model of powersample), EOS suppressed
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch


def build_model(shape: str, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if shape == "qwen2.5-1.5b":  # Qwen2.5-1.5B's published shape, random weights
        cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                          num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                          tie_word_embeddings=True, rope_theta=1000000.0)
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg).to(dtype)
    else:  # a small Llama that runs on 2 CPU cores
        cfg = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype)
    return model.eval()


@torch.no_grad()
def reference_power_sample(model, prompt: list[int], alpha: float, N: int, T: int, B: int, seed: int):
    """Public-code style MH: one generate() per proposal, full prefix re-run each time, batch 1."""
    rng = random.Random(seed)
    dev = next(model.parameters()).device

    def propose(prefix: list[int], n: int):
        out = model.generate(torch.tensor([prefix], device=dev), max_new_tokens=n, min_new_tokens=n,
                             do_sample=True, temperature=1 / alpha, top_k=0, top_p=1.0,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        new = out.sequences[0, len(prefix):].tolist()
        logits = torch.stack(out.logits, 1)[0].float()  # (n, vocab)
        ids = torch.tensor(new, device=dev)[:, None]
        lp = torch.log_softmax(logits, -1).gather(1, ids).squeeze(1).tolist()
        lq = torch.log_softmax(logits / (1 / alpha), -1).gather(1, ids).squeeze(1).tolist()
        return new, lp, lq

    gen, lp, lq, drawn = [], [], [], 0
    for k in range(math.ceil(T / B)):
        cap = min((k + 1) * B, T)
        new, a, b = propose(prompt + gen, cap - len(gen))
        gen, lp, lq, drawn = gen + new, lp + a, lq + b, drawn + len(new)
        for _ in range(N):
            t = rng.randrange(len(gen))
            new, a, b = propose(prompt + gen[:t], cap - t)
            drawn += len(new)
            log_r = alpha * (sum(a) - sum(lp[t:])) + sum(lq[t:]) - sum(b) + math.log(len(gen)) - math.log(t + len(new))
            if math.log(rng.random()) < log_r:
                gen, lp, lq = gen[:t] + new, lp[:t] + a, lq[:t] + b
    return gen, drawn


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default=None, help="small | qwen2.5-1.5b (default: small on CPU, qwen on CUDA)")
    ap.add_argument("--model", default=None, help="a real model instead (hub name, folder, .gguf, smollm2)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts for ours (default 8 CPU, 64 CUDA)")
    ap.add_argument("--chains", type=int, default=None, help="chains per prompt (default 1 CPU, 4 CUDA)")
    ap.add_argument("--reference-prompts", type=int, default=None, help="prompts for the reference (default 2/1)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--mcmc-steps", type=int, default=None, help="N (default 4 CPU, 10 CUDA)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="T (default 64 CPU, 1024 CUDA)")
    ap.add_argument("--blocks", type=int, default=4, help="T/B")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import powersample

    cuda = args.device.startswith("cuda")
    torch.set_num_threads(args.threads)
    shape = args.shape or ("qwen2.5-1.5b" if cuda else "small")
    prompts_n = args.prompts or (64 if cuda else 8)
    chains = args.chains or (4 if cuda else 1)
    ref_n = args.reference_prompts or (1 if cuda else 2)
    N = args.mcmc_steps if args.mcmc_steps is not None else (10 if cuda else 4)
    T = args.max_new_tokens or (1024 if cuda else 64)
    B = T // args.blocks
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.model:  # its weights as loaded (a GGUF is dequantised to float32)
        model = powersample.load_engine(args.model, device=args.device).model
        shape, dtype = args.model, model.dtype
    else:
        model = build_model(shape, args.device, dtype)
    vocab = model.config.vocab_size
    g = random.Random(0)
    prompts = [[g.randrange(2, vocab) for _ in range(args.prompt_len)] for _ in range(prompts_n)]
    print(f"model: {'' if args.model else 'random '}{shape} on {args.device} ({dtype}); alpha={args.alpha} N={N} "
          f"T={T} B={B}; EOS suppressed for both")

    # ours: all prompts x chains in one batch; eos id outside the vocabulary = EOS never drawn
    opts = dict(alpha=args.alpha, mcmc_steps=N, max_new_tokens=T, block_size=B, num_samples=chains,
                eos_token_id=vocab, batch_size=prompts_n)
    powersample.sample(model, prompts[:1], "power", seed=1, **{**opts, "num_samples": 1, "mcmc_steps": 1})  # warm up
    sync(args.device)
    t0 = time.perf_counter()
    res = powersample.sample(model, prompts, "power", seed=0, **opts)
    sync(args.device)
    ours_s = time.perf_counter() - t0
    ours_tokens = sum(r.tokens_generated for r in res)
    ours_rate = ours_tokens / ours_s
    ours_pp = ours_s / (prompts_n * chains)

    t0 = time.perf_counter()
    ref_tokens = 0
    for i in range(ref_n):
        _, drawn = reference_power_sample(model, prompts[i], args.alpha, N, T, B, seed=i)
        ref_tokens += drawn
    sync(args.device)
    ref_s = time.perf_counter() - t0
    ref_rate = ref_tokens / ref_s
    ref_pp = ref_s / ref_n

    print(f"{'implementation':<34}{'chains':>8}{'tokens':>10}{'seconds':>10}{'tokens/s':>11}{'s/chain':>10}")
    print(f"{'powersample (batched, KV reuse)':<34}{prompts_n * chains:>8}{ours_tokens:>10}{ours_s:>10.2f}"
          f"{ours_rate:>11.1f}{ours_pp:>10.3f}")
    print(f"{'reference (generate per proposal)':<34}{ref_n:>8}{ref_tokens:>10}{ref_s:>10.2f}{ref_rate:>11.1f}"
          f"{ref_pp:>10.3f}")
    print(f"ratio: powersample is {ours_rate / ref_rate:.1f}x the reference's tokens/s and "
          f"{ref_pp / ours_pp:.1f}x faster per chain ({prompts_n * chains} chains vs batch 1)")


if __name__ == "__main__":
    main()
