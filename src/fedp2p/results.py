"""The results folder: one metrics line per client per round, a summary, and the terminal table."""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PHASES = ("train", "distill", "eval", "send", "wait")


@dataclass(frozen=True)
class ClientRound:
    """What one client measured in one round: a line of metrics.jsonl."""

    algorithm: str
    round: int
    client: int
    arch: str
    global_acc: float
    local_acc: float
    global_size: int
    train_loss: float = float("nan")
    seconds: Mapping[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    neighbours_heard: int = 0

    def to_json(self) -> str:
        """One JSON line; NaN becomes null so every JSON reader accepts it."""
        return json.dumps(_finite(asdict(self)), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientRound:
        """Read back a metrics line (null accuracies become NaN)."""
        values = dict(data)
        for key in ("global_acc", "local_acc", "train_loss"):
            if values.get(key) is None:
                values[key] = float("nan")
        return cls(**values)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_metrics(path: Path) -> list[ClientRound]:
    """All records of a metrics.jsonl file."""
    with path.open(encoding="utf-8") as fh:
        return [ClientRound.from_dict(json.loads(line)) for line in fh if line.strip()]


def spread(values: Iterable[float]) -> dict[str, float | None]:
    """Mean, min and max of the finite values (None where there are none)."""
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return {"mean": None, "min": None, "max": None}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)}


def final_records(records: Sequence[ClientRound]) -> list[ClientRound]:
    """Each client's record from the last round it reported."""
    last: dict[int, ClientRound] = {}
    for r in records:
        if r.client not in last or r.round >= last[r.client].round:
            last[r.client] = r
    return [last[c] for c in sorted(last)]


def summarize(
    records: Sequence[ClientRound],
    *,
    algorithm: str,
    dataset: str,
    peers: int,
    rounds: int,
    wall_seconds: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """summary.json: accuracy overall and per architecture at each client's last round."""
    final = final_records(records)
    by_arch: dict[str, list[ClientRound]] = defaultdict(list)
    for r in final:
        by_arch[r.arch].append(r)
    phases: dict[str, float] = defaultdict(float)
    for r in records:
        for name, secs in r.seconds.items():
            phases[name] += secs
    total_phase = sum(phases.values())
    summary: dict[str, Any] = {
        "algorithm": algorithm,
        "dataset": dataset,
        "peers": peers,
        "rounds": rounds,
        "clients_reporting": len(final),
        "wall_seconds": wall_seconds,
        "global_acc": spread(r.global_acc for r in final),
        "local_acc": spread(r.local_acc for r in final),
        "per_arch": {
            arch: {
                "clients": len(rs),
                "global_acc": spread(r.global_acc for r in rs),
                "local_acc": spread(r.local_acc for r in rs),
            }
            for arch, rs in sorted(by_arch.items())
        },
        "bytes_sent": sum(r.bytes_sent for r in records),
        "bytes_sent_per_round": sum(r.bytes_sent for r in records) / max(rounds, 1),
        "time_share": {k: v / total_phase for k, v in sorted(phases.items())}
        if total_phase
        else {},
    }
    if extra:
        summary.update(extra)
    return _finite(summary)


class RunWriter:
    """Writes one algorithm's results folder as the run goes, so a crash keeps what was measured."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._metrics = (folder / "metrics.jsonl").open("a", encoding="utf-8")
        self.records: list[ClientRound] = []

    def add(self, record: ClientRound) -> None:
        """Append one record to memory and to metrics.jsonl, flushed at once."""
        self.records.append(record)
        self._metrics.write(record.to_json() + "\n")
        self._metrics.flush()

    def write_json(self, name: str, data: Any) -> Path:
        """A JSON file in the run folder."""
        path = self.folder / name
        path.write_text(
            json.dumps(_finite(data), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return path

    def close(self) -> None:
        """Close metrics.jsonl."""
        self._metrics.close()


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}"


def _table(summaries: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Architectures present and one row of cells per algorithm, shared by both table formats."""
    archs = sorted({a for s in summaries for a in s.get("per_arch", {})})
    rows = []
    for s in summaries:
        g = s["global_acc"]
        per = [_pct(s["per_arch"].get(a, {}).get("global_acc", {}).get("mean")) for a in archs]
        rows.append(
            [
                s["algorithm"],
                _pct(g["mean"]),
                _pct(g["min"]),
                _pct(g["max"]),
                *per,
                _pct(s["local_acc"]["mean"]),
                f"{s.get('bytes_sent', 0) / 1e6:.1f}",
                f"{s['wall_seconds']:.0f}",
            ]
        )
    return archs, rows


def results_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table, one row per algorithm: global accuracy overall and per arch, local, bytes, time."""
    archs, rows = _table(summaries)
    head = ["algorithm", "global mean", "min", "max", *archs, "local mean", "MB sent", "wall s"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    header = line(head)
    rule = "-" * len(header)
    title = "accuracy in % on the global test set (per-arch columns: global mean)"
    return "\n".join([title, rule, header, rule, *(line(r) for r in rows), rule])


def markdown_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The same table in Markdown, for the README and closing notes."""
    archs, rows = _table(summaries)
    head = ["algorithm", "global mean", "min", "max", *[f"{a} global" for a in archs]]
    head += ["local mean", "MB sent", "wall s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.strip() for c in r) + " |" for r in rows]
    return "\n".join(out)
