"""Peers learning together through real TCP on loopback: in threads, and as OS processes."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from fedp2p.config import build_config
from fedp2p.experiment import run_experiment
from fedp2p.peer.peer import Peer, PeerSetup
from fedp2p.results import read_metrics
from fedp2p.wire.secret import ENV_VAR, generate_secret
from fedp2p.workload import prepare


def tiny_config(tiny_images, tmp_path, **changes):
    values = {
        "dataset": str(tiny_images),
        "clients": 3,
        "archs": [
            "cnn3",
            "cnn3",
            "cnn5",
        ],  # peers 0 and 1 share an architecture, so weights flow too
        "rounds": 2,
        "alpha": 1.0,
        "min_shard": 10,
        "reference_size": 24,
        "kd_samples": 16,
        "kd_batch_size": 8,
        "eval_subset": 20,
        "batch_size": 16,
        "threads": 1,
        "round_timeout": 60.0,
        "join_timeout": 60.0,
        "out_dir": str(tmp_path / "runs"),
    }
    values.update(changes)
    return build_config(values)


def run_in_threads(config, tmp_path):
    """Three Peer objects, each with its own TCP node, in threads of this process."""
    workload = prepare(config)
    secret = generate_secret()
    listening = threading.Event()
    boot: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def status(event):
        if event["event"] == "listening" and event["client"] == 0:
            boot.append((event["host"], event["port"]))
            listening.set()

    def run(client, bootstrap):
        try:
            setup = PeerSetup(
                client, ("127.0.0.1", 0), bootstrap, secret, tmp_path / f"{client}.jsonl"
            )
            Peer(workload, setup, torch.device("cpu"), status).run()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(0, ()))]
    threads[0].start()
    assert listening.wait(30)
    for c in (1, 2):
        threads.append(threading.Thread(target=run, args=(c, tuple(boot))))
        threads[-1].start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    assert not errors, errors
    return {c: read_metrics(tmp_path / f"{c}.jsonl") for c in range(3)}


@pytest.mark.parametrize("algorithm", ["local", "weights", "logits", "features", "hybrid"])
def test_three_peers_two_rounds_over_tcp(algorithm, tiny_images, tmp_path):
    config = tiny_config(tiny_images, tmp_path, algorithm=algorithm)
    metrics = run_in_threads(config, tmp_path)
    for client, records in metrics.items():
        assert [r.round for r in records] == [1, 2]
        final = records[-1]
        assert 0.0 <= final.global_acc <= 1.0 and final.global_size == 40
        if algorithm == "local":
            assert final.bytes_sent == 0 and final.neighbours_heard == 0
        elif algorithm == "weights":
            assert final.neighbours_heard == (1 if client in (0, 1) else 0)
        else:
            assert final.neighbours_heard == 2
            assert final.bytes_sent > 0 and final.bytes_received > 0
            assert final.seconds["wait"] < 30  # nobody waited for a timeout


def test_launcher_runs_peer_processes_and_writes_results(tiny_images, tmp_path, capsys):
    config = tiny_config(tiny_images, tmp_path, algorithm="hybrid", name="procs")
    folder, summaries = run_experiment(config)
    records = read_metrics(folder / "metrics.jsonl")
    assert sorted((r.round, r.client) for r in records) == [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ]
    assert summaries[0]["bytes_sent"] > 0
    assert summaries[0]["clients_reporting"] == 3
    err = capsys.readouterr().err
    assert "peers alive 3/3" in err


@pytest.mark.parametrize(("sig", "round_timeout"), [(signal.SIGKILL, 30.0), (signal.SIGSTOP, 3.0)])
def test_a_dead_or_hung_peer_does_not_stop_the_others(sig, round_timeout, tiny_images, tmp_path):
    """Killed: its socket closes and nobody waits for it. Hung: the others wait round_timeout, no more."""
    config = tiny_config(
        tiny_images, tmp_path, algorithm="logits", rounds=3, round_timeout=round_timeout
    )
    (tmp_path / "run.toml").write_text(config.to_toml())
    env = dict(os.environ, **{ENV_VAR: generate_secret().hex()})

    def spawn(client, bootstrap=""):
        cmd = [
            sys.executable,
            "-m",
            "fedp2p",
            "peer",
            "--config",
            str(tmp_path / "run.toml"),
            "--id",
            str(client),
            "--metrics",
            str(tmp_path / f"{client}.jsonl"),
        ]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
        )

    procs = [spawn(0)]
    first = json.loads(procs[0].stdout.readline())
    procs += [spawn(c, f"{first['host']}:{first['port']}") for c in (1, 2)]
    try:
        for line in procs[2].stdout:  # kill or freeze peer 2 as soon as it has finished round 1
            if json.loads(line).get("event") == "round":
                procs[2].send_signal(sig)
                break
        for p in procs[:2]:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for client in (0, 1):
        records = read_metrics(Path(tmp_path / f"{client}.jsonl"))
        assert [r.round for r in records] == [1, 2, 3]
        assert records[0].neighbours_heard == 2
        assert records[-1].neighbours_heard == 1  # peer 2 is gone; the round went on without it
        assert records[-1].seconds["wait"] < round_timeout + 5
        if sig == signal.SIGSTOP:
            assert (
                records[1].seconds["wait"] >= round_timeout - 0.5
            )  # waited for the hung peer, then went on
