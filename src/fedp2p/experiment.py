"""A run: the shards once, then each requested algorithm on them, each into its own results folder."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from fedp2p.config import RunConfig
from fedp2p.learn.learner import Learner
from fedp2p.learn.train import accuracy, configure_threads, pick_device
from fedp2p.plots import accuracy_curves, compare_algorithms, shard_heatmap
from fedp2p.results import ClientRound, RunWriter, markdown_table, results_table, summarize
from fedp2p.workload import Workload, prepare

log = logging.getLogger(__name__)


class Progress:
    """One line per round on the terminal: where the run is and how it is doing."""

    def __init__(self, algorithm: str, rounds: int, stream: TextIO | None = None) -> None:
        self.algorithm = algorithm
        self.rounds = rounds
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def round_done(self, rnd: int, records: Sequence[ClientRound], note: str = "") -> None:
        """Print mean accuracy overall and per architecture for a finished round."""
        accs: dict[str, list[float]] = {}
        for r in records:
            if r.round == rnd and r.global_acc == r.global_acc:
                accs.setdefault(r.arch, []).append(r.global_acc)
        self.show(rnd, accs, note)

    def show(self, rnd: int, accs: dict[str, list[float]], note: str = "") -> None:
        """Print one round's line from accuracies grouped by architecture."""
        every = [a for v in accs.values() for a in v]
        mean = f"{100 * float(np.mean(every)):5.1f}%" if every else "  -  "
        per = " ".join(f"{a} {100 * float(np.mean(v)):5.1f}" for a, v in sorted(accs.items()) if v)
        elapsed = time.perf_counter() - self.start
        print(
            f"[{self.algorithm}] round {rnd:>3}/{self.rounds}  global acc {mean}  ({per})"
            f"  {elapsed:6.0f}s {note}",
            file=self.stream,
            flush=True,
        )


def run_folder(config: RunConfig) -> Path:
    """runs/<name or time>-<dataset>-<algorithms>, never overwriting an earlier run."""
    stamp = config.name or datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.out_dir) / f"{stamp}-{config.dataset}-{'+'.join(config.algorithms)}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _is_eval_round(config: RunConfig, rnd: int, rounds: int) -> bool:
    return rnd == rounds or rnd % config.eval_every == 0


def run_local(
    workload: Workload, writer: RunWriter, progress: Progress, device: torch.device
) -> None:
    """Every client trains alone on its shard: the baseline collaboration must beat."""
    config = workload.config
    learners = [workload.learner(c, device) for c in range(config.clients)]
    for rnd in range(1, config.rounds + 1):
        evaluate = _is_eval_round(config, rnd, config.rounds)
        gx, gy = workload.global_test(final=rnd == config.rounds)
        for client, learner in enumerate(learners):
            t0 = time.perf_counter()
            loss = learner.train(config.local_epochs)
            t1 = time.perf_counter()
            if not evaluate:
                continue
            ev = learner.evaluate(gx, gy)
            t2 = time.perf_counter()
            writer.add(
                ClientRound(
                    "local",
                    rnd,
                    client,
                    config.arch_of(client),
                    ev.global_acc,
                    ev.local_acc,
                    ev.global_size,
                    loss,
                    {"train": t1 - t0, "eval": t2 - t1},
                )
            )
        if evaluate:
            progress.round_done(rnd, writer.records)


def run_central(
    workload: Workload, writer: RunWriter, progress: Progress, device: torch.device
) -> None:
    """Each architecture trained on all shards pooled: the upper reference no peer can reach alone."""
    config, data, part = workload.config, workload.dataset, workload.partition
    pooled = np.sort(np.concatenate([s.train_idx for s in part.shards]))
    learners: dict[str, Learner] = {}
    for i, arch in enumerate(config.archs):
        learners[arch] = Learner(
            workload.model_config(arch),
            data.train_x[pooled],
            data.train_y[pooled],
            np.empty((0, *data.train_x.shape[1:]), np.uint8),
            np.empty(0, np.int64),
            workload.settings(config.seed * 1000 + i),
            device,
            model_seed=config.seed * 1000 + i,
        )
    for rnd in range(1, config.rounds + 1):
        evaluate = _is_eval_round(config, rnd, config.rounds)
        gx, gy = workload.global_test(final=rnd == config.rounds)
        for arch, learner in learners.items():
            t0 = time.perf_counter()
            loss = learner.train(config.local_epochs)
            t1 = time.perf_counter()
            if not evaluate:
                continue
            global_acc = learner.evaluate(gx, gy).global_acc
            for client in range(config.clients):
                if config.arch_of(client) != arch:
                    continue
                test_idx = part.shards[client].test_idx
                local_acc = accuracy(
                    learner.model,
                    data.train_x[test_idx],
                    data.train_y[test_idx],
                    learner.mean,
                    learner.std,
                    device,
                )
                writer.add(
                    ClientRound(
                        "central",
                        rnd,
                        client,
                        arch,
                        global_acc,
                        local_acc,
                        len(gy),
                        loss,
                        {"train": (t1 - t0) / max(1, config.clients // len(config.archs))},
                    )
                )
        if evaluate:
            progress.round_done(rnd, writer.records)


Runner = Callable[[Workload, RunWriter, Progress, torch.device], None]


def runner_for(algorithm: str) -> Runner:
    """The in-process runners; the collaborative algorithms run as peer processes."""
    if algorithm == "local":
        return run_local
    if algorithm == "central":
        return run_central
    from fedp2p.launcher import run_peers

    return run_peers


def run_experiment(
    config: RunConfig, stream: TextIO | None = None
) -> tuple[Path, list[dict[str, Any]]]:
    """Run every algorithm the config names on the same shards; write results; print the table."""
    stream = stream or sys.stderr
    configure_threads(config.threads, processes=1)
    device = pick_device(config.device)
    t0 = time.perf_counter()
    workload = prepare(config)
    part = workload.partition
    print(
        f"{config.dataset}: {config.clients} clients ({', '.join(config.archs)}), alpha {config.alpha}, "
        f"shard sizes {min(s.size for s in part.shards)}-{max(s.size for s in part.shards)}, "
        f"reference set {len(part.reference_idx)}, device {device}, data ready in {time.perf_counter() - t0:.1f}s",
        file=stream,
        flush=True,
    )
    top = run_folder(config)
    single = len(config.algorithms) == 1
    summaries: list[dict[str, Any]] = []
    runs: dict[str, list[ClientRound]] = {}
    counts = part.label_counts(workload.dataset.train_y)
    archs = [config.arch_of(c) for c in range(config.clients)]
    for algo in config.algorithms:
        algo_config = replace(config, algorithm=algo)
        folder = top if single else top / algo
        writer = RunWriter(folder)
        writer.write_json("config.json", algo_config.to_dict())
        writer.write_json(
            "shards.json",
            {
                "label_counts": counts.tolist(),
                "archs": archs,
                "reference_size": len(part.reference_idx),
            },
        )
        shard_heatmap(counts, workload.dataset.classes, archs, folder / "shards.png")
        started = time.perf_counter()
        algo_workload = replace(workload, config=algo_config)
        try:
            runner_for(algo)(algo_workload, writer, Progress(algo, config.rounds, stream), device)
        finally:
            writer.close()
        summary = summarize(
            writer.records,
            algorithm=algo,
            dataset=config.dataset,
            peers=config.clients,
            rounds=config.rounds,
            wall_seconds=time.perf_counter() - started,
        )
        writer.write_json("summary.json", summary)
        accuracy_curves(
            writer.records,
            f"{algo} on {config.dataset}, alpha {config.alpha}",
            folder / "accuracy.png",
        )
        summaries.append(summary)
        runs[algo] = writer.records
    if not single:
        (top / "summaries.json").write_text(
            json.dumps(summaries, indent=2) + "\n", encoding="utf-8"
        )
        compare_algorithms(runs, summaries, top / "comparison.png")
    (top / "results.md").write_text(markdown_table(summaries) + "\n", encoding="utf-8")
    print("\n" + results_table(summaries), file=stream)
    print(f"results in {top}", file=stream, flush=True)
    return top, summaries
