#!/usr/bin/env bash
# Install (first run) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python -m pytest "$@"
