"""Train the gym model: a tiny Llama on the gym corpus, next-token loss on completions only.

    powersample gym train --out src/powersample/gym/model --steps 5000 --seed 0 --threads 1

Each step draws a fresh batch from the data-generating process (no epochs, no overfitting to a fixed
set), so the model's conditionals estimate the data law, which is what `exact.py` computes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import check
from .data import Example, sample_example
from .design import GymDesign, GymSpec, get_spec
from .tokenizer import BOS_ID, EOS_ID, MAX_LENGTH, PAD_ID, VOCAB, encode, save_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Model size and optimisation; the defaults give the shipped model."""

    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float = 1e-4  # cosine decay ends here
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    intermediate: int = 256
    seed: int = 0
    # torch CPU threads while training (restored afterwards). On a shared 2-core machine use 1: two
    # OpenMP threads spin-waiting on each other while other jobs hold a core ran 20x slower, not 2x faster.
    threads: int = 2
    eval_every: int = 500  # steps between progress checks on held-out problems; 0 = never

    def __post_init__(self):
        for name in ("steps", "batch_size", "hidden", "layers", "heads", "intermediate", "threads"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}",
                  name, value)
        for name in ("warmup", "eval_every", "seed"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}",
                  name, value)
        check(self.hidden % self.heads == 0,
              f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})", "heads", self.heads)
        check(0 < self.min_lr <= self.lr, f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}",
              "lr", self.lr)
        check(self.weight_decay >= 0 and self.grad_clip > 0, "weight_decay must be >= 0 and grad_clip > 0",
              "weight_decay", self.weight_decay)


# A model that trains in seconds, for tests of the pipeline (it learns little).
TINY = dict(steps=20, batch_size=16, hidden=32, layers=1, heads=2, intermediate=64, warmup=2, threads=1,
            eval_every=0)


def model_config(cfg: TrainConfig):
    """The LlamaConfig of the gym model."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(VOCAB), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                       num_key_value_heads=cfg.heads, max_position_embeddings=MAX_LENGTH,
                       tie_word_embeddings=True,  # one matrix for in and out: half the embedding weights
                       bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)


def encode_example(ex: Example) -> tuple[list[int], int]:
    """(token ids of BOS + prompt + completion + EOS, number of leading tokens that are not targets)."""
    prompt = [BOS_ID, *encode(ex.problem.prompt)]
    return prompt + encode(ex.completion) + [EOS_ID], len(prompt)


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def _step_loss(model, batch: list[tuple[list[int], int]]) -> float:
    """Backpropagate the batch's mean NLL per completion token, and return it. Rows are grouped by
    length so nothing is padded (a shortcut row is ~17 tokens, a worked one ~45)."""
    import torch
    import torch.nn.functional as F

    groups: dict[int, list[tuple[list[int], int]]] = {}
    for ids, n_prompt in batch:
        groups.setdefault(len(ids), []).append((ids, n_prompt))
    total = sum(len(ids) - n for ids, n in batch)
    loss_sum = 0.0
    for rows in groups.values():
        ids = torch.tensor([r for r, _ in rows])
        targets = ids[:, 1:].clone()
        for i, (_, n_prompt) in enumerate(rows):
            targets[i, : n_prompt - 1] = -100  # the prompt is given, not learned
        logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-100, reduction="sum") / total
        loss.backward()  # per group: frees each group's graph before the next
        loss_sum += loss.item()
    return loss_sum


def progress(model, n: int = 128, spec: GymSpec | str = "gym") -> dict[str, float]:
    """Held-out checks per level: P(first token = shortcut) and greedy accuracy once a worked start is
    forced (keys suffixed by the level's digits when the gym has several levels)."""
    spec = get_spec(spec)
    out = {}
    for level in spec.levels:
        suffix = "" if len(spec.levels) == 1 else f"_{level.digits}"
        out.update({k + suffix: v for k, v in _progress_level(model, n, level, spec).items()})
    return out


def _progress_level(model, n: int, level: GymDesign, spec: GymSpec) -> dict[str, float]:
    import torch

    from .grader import grade
    from .sampling import draw
    from .task import eval_problems

    problems = eval_problems(min(n, 40) if level.digits == 1 else n, seed=1, digits=level.digits,
                             name=spec.problem_name(level))
    ids = torch.tensor([[BOS_ID, *encode(p.prompt)] for p in problems])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        p_first = torch.softmax(model(input_ids=ids).logits[:, -1].float(), -1)
    starts = [VOCAB[str(p.a % 10)] for p in problems]  # a worked solution opens with a's units digit
    rows = draw(model, problems, 0.0, first=starts, max_new_tokens=16 * level.digits)
    model.train(was_training)
    return dict(p_shortcut_first=float(p_first[:, VOCAB["A"]].mean()),
                p_worked_first=float(p_first[torch.arange(len(problems)), starts].mean()),
                worked_greedy_acc=sum(grade(p, r[0].text, r[0].finished).correct
                                      for p, r in zip(problems, rows, strict=True)) / len(problems))


def _design_log(spec: GymSpec, design: GymDesign | None) -> dict:
    """The data law in train_log.json: "design" for a one-level gym (as it always was), else the levels."""
    if len(spec.levels) == 1:
        return dict(design=asdict(design or spec.levels[0]))
    return dict(gym=spec.name, levels=[asdict(design or d) for d in spec.levels])


def train(out_dir: str | Path, steps: int | None = None, seed: int = 0, tiny: bool = False,
          design: GymDesign | None = None, config: TrainConfig | None = None,
          echo: Callable[[str], None] | None = None, spec: GymSpec | str = "gym") -> Path:
    """Train a model for gym `spec` and save it (weights, config, tokenizer, train_log.json) in `out_dir`;
    `design` replaces the designs of every level (for a one-level gym's variants)."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    spec = get_spec(spec)
    cfg = config or TrainConfig(**(TINY if tiny else {}))
    cfg = replace(cfg, seed=seed, **({} if steps is None else {"steps": steps}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = echo or (lambda _msg: None)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(model_config(cfg))
        n_params = sum(p.numel() for p in model.parameters())
        say(f"gym train: {n_params:,} parameters, {cfg.steps} steps of {cfg.batch_size}, seed {cfg.seed}")
        decay = [p for p in model.parameters() if p.dim() >= 2]  # no decay on norms (nanoGPT)
        rest = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
        rng = random.Random(f"powersample.gym.train/{cfg.seed}" + ("" if spec.name == "gym" else f"/{spec.name}"))
        history: list[dict] = []
        t0 = time.perf_counter()
        model.train()
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, step)
            batch = [encode_example(sample_example(spec, rng, design)) for _ in range(cfg.batch_size)]
            loss = _step_loss(model, batch)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            last = step + 1 == cfg.steps
            if step % 50 == 0 or last:
                seconds = time.perf_counter() - t0
                history.append(dict(step=step, loss=round(loss, 5), seconds=round(seconds, 1)))
                log.info("step %d loss %.4f (%.0fs)", step, loss, seconds)
            if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or last):
                stats = progress(model, spec=spec)  # joins the latest loss row (at most 49 steps older)
                history[-1].update({k: round(v, 4) for k, v in stats.items()})
                say(f"step {step + 1}: loss {loss:.4f} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items())
                    + f" ({time.perf_counter() - t0:.0f}s)")
        seconds = time.perf_counter() - t0
        model.eval()
        # only the special ids: no do_sample / top_k / top_p / temperature that would bend sampling
        model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                                                   pad_token_id=PAD_ID)
        model.save_pretrained(str(out))
        save_tokenizer(out)
        (out / "train_log.json").write_text(json.dumps(dict(
            config=asdict(cfg), **_design_log(spec, design), parameters=n_params, seconds=round(seconds, 1),
            torch=torch.__version__, history=history), indent=1) + "\n")
        say(f"gym train: saved to {out} after {seconds:.0f}s")
        return out
    finally:
        torch.set_num_threads(old_threads)
