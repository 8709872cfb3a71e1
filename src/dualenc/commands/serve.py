"""`dualenc serve --run RUN [--index INDEX]`: the HTTP JSON service (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dualenc.errors import DualencError
from dualenc.fileio import read_json

# flag -> (Limits field, help); each default comes from dualenc.service.Limits
LIMIT_FLAGS = {
    "--max-body-bytes": ("max_body_bytes", "largest request body, in bytes"),
    "--max-context-chars": ("max_context_chars", "characters of a context, all turns together"),
    "--max-turns": ("max_turns", "turns of a context sent as a list"),
    "--max-candidates": ("max_candidates", "candidates of one /rank request"),
    "--max-candidate-chars": ("max_candidate_chars", "characters of one candidate"),
    "--max-k": ("max_k", "responses one /respond request may ask for"),
}
_DEFAULT_LIMITS = {  # equal to dualenc.service.Limits (a test checks), which needs FastAPI
    "max_body_bytes": 1 << 20, "max_context_chars": 20_000, "max_turns": 100,
    "max_candidates": 100, "max_candidate_chars": 5_000, "max_k": 100,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP JSON service over a run and a response bank",
        description="Serve POST /rank (a context and candidates -> ranked candidates), "
        "POST /respond (a context -> the best responses of the --index bank), GET /health "
        "and the API documentation at /docs. The model and the bank load once, at start-up.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder written by train")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run (default best)")
    p.add_argument("--index", type=Path, help="a bank written by `dualenc index`, for /respond")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 opens the service to "
                   "the network)")
    p.add_argument("--port", type=int, default=8000,
                   help="port to listen on (default 8000; 0 picks a free one)")
    p.add_argument("--config", type=Path,
                   help="a JSON file of limits (the flag names below, as max_body_bytes etc.); "
                   "flags override it")
    for flag, (field, text) in LIMIT_FLAGS.items():
        p.add_argument(flag, dest=field, type=int, default=None, metavar="N",
                       help=f"{text} (default {_DEFAULT_LIMITS[field]:,})")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: torch's own choice)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)


def limit_settings(args: argparse.Namespace) -> dict[str, int]:
    """The limits: defaults, then the --config file, then explicit flags; all checked."""
    settings: dict[str, Any] = dict(_DEFAULT_LIMITS)
    if args.config is not None:
        loaded = read_json(args.config)
        unknown = sorted(set(loaded) - set(settings)) if isinstance(loaded, dict) else ["?"]
        if unknown:
            raise DualencError(f"{args.config}: unknown limits {', '.join(unknown)}; "
                               f"known: {', '.join(settings)}")
        settings.update(loaded)
    settings.update({f: getattr(args, f) for f, _ in LIMIT_FLAGS.values()
                     if getattr(args, f) is not None})
    bad = [f"{name} must be a positive integer, got {value!r}" for name, value in settings.items()
           if not isinstance(value, int) or isinstance(value, bool) or value < 1]
    if bad:
        raise DualencError("invalid limits:\n  " + "\n  ".join(bad))
    return settings


def run(args: argparse.Namespace) -> int:
    import torch

    try:
        from dualenc import service
    except ImportError as err:
        raise DualencError(f"serve needs FastAPI and uvicorn: pip install 'dualenc[serve]' "
                           f"({err})") from err
    from dualenc.index import ResponseBank
    from dualenc.ranker import Ranker

    limits = service.Limits(**limit_settings(args))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ranker = Ranker.load(args.run, args.checkpoint)
    bank = ResponseBank.load(args.index, ranker) if args.index is not None else None
    service.serve(service.create_app(ranker, bank, limits), args.host, args.port,
                  access_log=args.access_log)
    return 0
