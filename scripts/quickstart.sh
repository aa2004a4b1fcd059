#!/usr/bin/env bash
# Set up, then run the short preset of the main experiment; extra arguments go to `fedp2p run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedp2p run --preset quick "$@"
