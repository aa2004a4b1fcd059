"""The `fedp2p` command line: run experiments, run one peer, make a network secret."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fedp2p import __version__
from fedp2p.config import RunConfig, load_config, parse_overrides, preset_names
from fedp2p.errors import UserError

log = logging.getLogger(__name__)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--preset", metavar="NAME", help=f"a shipped config: {', '.join(preset_names())}"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set rounds=5 --set algorithm=local,central",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="folder holding the data set files")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, kept separate so tests can check it."""
    parser = argparse.ArgumentParser(prog="fedp2p", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedp2p {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment and write a results folder")
    _config_args(run)
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Preset, then file, then --data-dir, then --set overrides."""
    overrides: dict[str, str] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    overrides.update(parse_overrides(args.overrides))
    return load_config(args.config, args.preset, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from fedp2p.experiment import run_experiment

    run_experiment(resolve_config(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: configure logging once, dispatch, and turn user errors into one sentence."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    commands = {"run": _cmd_run}
    try:
        return commands[args.command](args)
    except UserError as exc:
        print(f"fedp2p: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedp2p: interrupted.", file=sys.stderr)
        return 130
