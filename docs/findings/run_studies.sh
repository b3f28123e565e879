#!/usr/bin/env bash
# The three studies of docs/FINDINGS.md, on the embedded model (SmolLM2-135M-Instruct Q4_1).
# Each writes report.md and report.json under docs/findings/<study>/; the sample cache and
# trajectories go to .selfcorrect/findings.sqlite, so an interrupted study resumes for free.
# LIMIT=3 runs a quick check of the same commands.
set -euo pipefail
cd "$(dirname "$0")/../.."
sc=("${PYTHON:-.venv/bin/python}" -m selfcorrect.cli --data "${DATA:-../shared/data}" --store "${STORE:-.selfcorrect/findings.sqlite}")
out=${OUT:-docs/findings}
"${sc[@]}" eval --task arithmetic --critic same ${LIMIT:+--limit $LIMIT} --out "$out/arithmetic" \
  --strategy single,self-consistency,universal-self-consistency,best-of-n:n=4,self-refine,reflexion,critic-refine,gated-refine,program-aided,self-verify,oracle-refine
"${sc[@]}" eval --task mbpp --max-tokens 200 ${LIMIT:+--limit $LIMIT} --out "$out/mbpp" \
  --strategy single,self-consistency:n=5,best-of-n:n=5,self-debug,self-debug:explain=true,self-refine
"${sc[@]}" eval --task gsm8k --max-tokens 256 --limit "${LIMIT:-200}" --out "$out/gsm8k" \
  --strategy single,self-consistency:n=5,self-refine,program-aided
