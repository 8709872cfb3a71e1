"""The `dualenc` command: one subcommand a module, each with its own `register` function."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from dualenc import __version__
from dualenc.errors import DualencError

# Each module defines `register(subparsers)`, which adds its subcommand and sets `func`.
COMMAND_MODULES = [
    "dualenc.commands.demo",
    "dualenc.commands.create",
    "dualenc.commands.dialogs",
    "dualenc.commands.prepare",
    "dualenc.commands.train",
    "dualenc.commands.evaluate",
    "dualenc.commands.rank",
    "dualenc.commands.index",
    "dualenc.commands.chat",
    "dualenc.commands.serve",
    "dualenc.commands.plot",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand whose module is present."""
    parser = argparse.ArgumentParser(
        prog="dualenc",
        description="Dual-encoder response selection for retrieval-based dialog.",
    )
    parser.add_argument("--version", action="version", version=f"dualenc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (DualencError, FileExistsError, FileNotFoundError) as err:
        print(f"dualenc {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dualenc {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The process: `main()`, then its exit status.

    A worker started by torchrun leaves without the interpreter's shutdown. DDP keeps the
    process group's C++ object alive past destroy_process_group, and during the shutdown a
    gloo worker thread that still has to release a tensor asks for the GIL and aborts the
    process, after a run that has written everything. So once main() has returned, with
    every file closed, such a worker flushes its output and exits at once."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "torch.distributed" in sys.modules:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
