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
    peer = sub.add_parser("peer", help="run one peer process (one client) of a network")
    _config_args(peer)
    peer.add_argument("--id", type=int, required=True, help="this peer's client id, 0..clients-1")
    peer.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where to listen (port 0: any free port)",
    )
    peer.add_argument(
        "--bootstrap",
        default="",
        metavar="HOST:PORT,...",
        help="peers to ask first; gossip finds the rest",
    )
    peer.add_argument(
        "--metrics",
        default="",
        metavar="FILE",
        help="metrics.jsonl to append to (default: peer-ID.jsonl here)",
    )
    peer.add_argument(
        "--secret-file",
        default=None,
        metavar="FILE",
        help="the network's shared secret (hex); default $FEDP2P_SECRET",
    )
    peer.add_argument("--device", default=None, help="override the config's device")
    keygen = sub.add_parser("keygen", help="write a new shared secret for a network")
    keygen.add_argument("path", help="file to write (mode 600); give it to every peer")
    return parser


def parse_address(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT to a tuple, or one sentence saying what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:7000).")
    return host.strip("[]"), int(port)


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


def _cmd_peer(args: argparse.Namespace) -> int:
    import signal
    from pathlib import Path

    from fedp2p.learn.train import configure_threads, pick_device
    from fedp2p.peer.peer import Peer, PeerSetup, json_status
    from fedp2p.wire.secret import load_secret
    from fedp2p.workload import prepare

    config = resolve_config(args)
    if not 0 <= args.id < config.clients:
        raise UserError(
            f"--id {args.id} is outside 0..{config.clients - 1} for a {config.clients}-client config."
        )
    listen = parse_address(args.listen, "--listen")
    bootstrap = tuple(
        parse_address(a, "--bootstrap") for a in args.bootstrap.split(",") if a.strip()
    )
    secret = load_secret(args.secret_file)
    configure_threads(config.threads, processes=config.clients)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    metrics = Path(args.metrics or f"peer-{args.id:03d}.jsonl")
    metrics.parent.mkdir(parents=True, exist_ok=True)
    setup = PeerSetup(args.id, listen, bootstrap, secret, metrics)
    device = pick_device(args.device or config.device)
    Peer(prepare(config), setup, device, json_status(sys.stdout)).run()
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    import os

    from fedp2p.wire.secret import generate_secret

    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_secret().hex() + "\n")
    print(f"wrote a new secret to {args.path}; give the same file to every peer (--secret-file).")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: configure logging once, dispatch, and turn user errors into one sentence."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    commands = {"run": _cmd_run, "peer": _cmd_peer, "keygen": _cmd_keygen}
    try:
        return commands[args.command](args)
    except UserError as exc:
        print(f"fedp2p: error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(
            f"fedp2p: error: {exc.filename} already exists; choose another path.", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print("fedp2p: interrupted.", file=sys.stderr)
        return 130
