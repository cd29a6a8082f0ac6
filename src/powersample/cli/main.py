"""`powersample` entry point: dispatches to one module per subcommand; heavy imports happen in run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import PowerSampleError

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "generate": ("powersample.cli.generate", "sample completions for prompts with any method"),
    "demo": ("powersample.cli.demo", "show power sampling's effect on the shipped gym model, offline"),
    "eval": ("powersample.cli.eval", "run a benchmark task and grade every sample"),
    "report": ("powersample.cli.report", "accuracy, pass@k and plots for one or more eval runs"),
    "gym": ("powersample.cli.gym", "the reasoning gym: build data, train the shipped model"),
    "controller": ("powersample.cli.controller", "Dynamic Power Sampling: train and replay controllers"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="powersample", description="Sample from p^alpha of a base language model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bar is the one that matters
    except ImportError:
        pass
    try:
        return int(args._run(args) or 0)
    except PowerSampleError as e:
        print(f"powersample {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"powersample {args.command}: interrupted; finished rows are saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
