#!/usr/bin/env bash
# Sets up (see setup.sh) and runs `stepwell demo`: a complete two-round,
# tool-using Open Responses response, streamed to the terminal, against a
# scripted model on loopback that the demo starts itself. No key, no config.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/stepwell demo
