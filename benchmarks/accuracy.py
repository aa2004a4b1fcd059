"""The measured claim: local-only against every collaborative algorithm, on the same shards, in one run.

Run (MNIST, 30 peers, alpha 0.1):
    .venv/bin/python benchmarks/accuracy.py --data-dir ../shared/data
    .venv/bin/python benchmarks/accuracy.py --data-dir ../shared/data --set dataset=cifar10
Prints the results table (Markdown too), where each algorithm's peer time went, and whether
the best collaborative algorithm beats local-only by >= 28 points of mean global accuracy
and reaches >= 95% (the MNIST target).
"""

from __future__ import annotations

import argparse
import sys

from fedp2p.config import load_config, parse_overrides
from fedp2p.experiment import run_experiment
from fedp2p.results import PHASES, markdown_table

ALGORITHMS = "local,weights,logits,features,hybrid"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--algorithms", default=ALGORITHMS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {"algorithm": args.algorithms, "name": "accuracy"}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    overrides.update(parse_overrides(args.overrides))
    config = load_config(overrides=overrides)
    folder, summaries = run_experiment(config, stream=sys.stdout)

    print("\n" + markdown_table(summaries))
    print("\nwhere peers' time went (share of summed per-peer seconds)")
    print("| algorithm | " + " | ".join(PHASES) + " |")
    print("|---|" + "---|" * len(PHASES))
    for s in summaries:
        share = s.get("time_share", {})
        print(
            f"| {s['algorithm']} | "
            + " | ".join(f"{100 * share.get(p, 0):.0f}%" for p in PHASES)
            + " |"
        )

    by_algo = {s["algorithm"]: s["global_acc"]["mean"] for s in summaries}
    local = by_algo.get("local")
    collab = {a: v for a, v in by_algo.items() if a not in ("local", "central") and v is not None}
    if local is not None and collab:
        best = max(collab, key=lambda a: collab[a])
        gain = 100 * (collab[best] - local)
        print(
            f"\nbest collaborative: {best} {100 * collab[best]:.1f}% vs local-only {100 * local:.1f}%: "
            f"+{gain:.1f} points (target >= 28: {'met' if gain >= 28 else 'NOT met'}; "
            f">= 95%: {'met' if collab[best] >= 0.95 else 'NOT met'})"
        )
    print(f"results in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
