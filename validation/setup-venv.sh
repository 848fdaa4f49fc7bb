#!/usr/bin/env bash
# Creates (once) the Python environment of the reference package in validation/.venv.
# Idempotent: a venv whose installed set matches requirements.txt is left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${AION_VENV:-$here/.venv}
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
# torch from PyPI is the CUDA 12.8 build (there is no CPU-only wheel on PyPI); it runs on CPU too.
"$venv/bin/pip" install -q --no-cache-dir -r "$here/requirements.txt"
# triton is only needed by torch.compile; drop 0.6 GB.
"$venv/bin/pip" uninstall -q -y triton >/dev/null 2>&1 || true
echo "$want" > "$stamp"
