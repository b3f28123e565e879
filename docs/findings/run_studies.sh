#!/usr/bin/env bash
# The three studies of docs/FINDINGS.md, on the embedded model (SmolLM2-135M-Instruct, Q8_0
# converted from the shipped Q4_1). Each writes report.{md,json,html} under
# docs/findings/<study>/; the sample cache and trajectories go to .selfcorrect/findings.sqlite,
# so an interrupted study resumes for free (`selfcorrect eval --resume RUN`).
#   docs/findings/run_studies.sh                 # all three, in order
#   docs/findings/run_studies.sh arithmetic      # one of them
#   docs/findings/run_studies.sh online-arithmetic online-arithmetic-feedback online-mbpp   # the error memory (issue 9)
#   docs/findings/run_studies.sh train-rft-gold train-star-program train-dpo-gold train-dpo-judge  # self-training (issue 10)
#   docs/findings/run_studies.sh train-grpo train-score train-correction train-compare        # RL (issue 12)
#   docs/findings/run_studies.sh verifier-prm search-prm                                     # search with a learned PRM (issue 11)
#   docs/findings/run_studies.sh improve-arithmetic improve-mbpp                             # selfcorrect improve (issue 24)
#   docs/findings/run_studies.sh improve-arithmetic-redrawn improve-mbpp-redrawn             # split by question, confirmation, control (issue 34)
#   docs/findings/run_studies.sh improve-arithmetic-timed                                    # adaptive sampling, each phase timed, 5 rounds (issue 35)
#   docs/findings/run_studies.sh online-arithmetic-gated online-mbpp-gated feedback-stream   # the gated memory (issue 25)
# LIMIT=3 runs a quick check of the same commands.
set -euo pipefail
cd "$(dirname "$0")/../.."
sc=("${PYTHON:-.venv/bin/python}" -m selfcorrect.cli --data "${DATA:-../shared/data}" --store "${STORE:-.selfcorrect/findings.sqlite}")
out=${OUT:-docs/findings}
# An improve run's reports and recipe, and each round's (and the control's) training data, gzipped,
# so that anyone can check that no gold and no measured question entered training.
keep_run() {
  local run=$1 dest=$2 data rel
  mkdir -p "$dest" && cp "$run"/{report.md,report.json,report.html,recipe.json} "$dest/"
  for data in "$run"/round-*/data.jsonl "$run"/round-*/control/data.jsonl; do
    [ -f "$data" ] || continue
    rel=${data#"$run"/} && mkdir -p "$dest/$(dirname "$rel")" && gzip -nc "$data" > "$dest/$rel.gz"
  done
}
for study in "${@:-arithmetic mbpp gsm8k online-arithmetic online-arithmetic-feedback online-mbpp}"; do
  for name in $study; do
    case $name in
      arithmetic) "${sc[@]}" eval --task arithmetic --critic same --pool-cap 48 ${LIMIT:+--limit $LIMIT} --out "$out/arithmetic" \
        --strategy single,self-consistency,universal-self-consistency,best-of-n:n=4,self-refine,reflexion,critic-refine,gated-refine,program-aided,self-verify,oracle-refine ;;
      # MBPP: the pool stops at 12 samples; self-refine's budget would need 24, another hour of 2 cores.
      mbpp) "${sc[@]}" eval --task mbpp --max-tokens 200 --pool-cap 12 ${LIMIT:+--limit $LIMIT} --out "$out/mbpp" \
        --strategy single,self-consistency:n=5,best-of-n:n=5,self-debug,self-debug:explain=true,self-refine ;;
      gsm8k) "${sc[@]}" eval --task gsm8k --max-tokens 256 --limit "${LIMIT:-200}" --out "$out/gsm8k" \
        --strategy single,self-consistency:n=5,self-refine,program-aided ;;
      # Online: items in order, the memory learning from each before the next, against the
      # same strategy without memory; the last 30% of the items only read the memory.
      online-arithmetic) "${sc[@]}" memory clear arithmetic-online --yes
        "${sc[@]}" eval --task arithmetic --online --holdout 0.3 --no-reference --memory arithmetic-online \
        ${LIMIT:+--limit $LIMIT} --out "$out/online-arithmetic" --strategy program-aided:memory=on ;;
      online-arithmetic-feedback) "${sc[@]}" memory clear arithmetic-online-feedback --yes
        "${sc[@]}" eval --task arithmetic --online --holdout 0.3 --no-reference --memory arithmetic-online-feedback \
        --no-memory-fixes ${LIMIT:+--limit $LIMIT} --out "$out/online-arithmetic-feedback" --strategy program-aided:memory=on ;;
      online-mbpp) "${sc[@]}" memory clear mbpp-online --yes
        "${sc[@]}" eval --task mbpp --max-tokens 200 --online --holdout 0.3 --no-reference --memory mbpp-online \
        --limit "${LIMIT:-150}" --out "$out/online-mbpp" --strategy self-debug:memory=on ;;
      # The gated memory (issue 25): what memory shows only once paired evidence admits it.
      online-arithmetic-gated) "${sc[@]}" memory clear arithmetic-gated --yes
        "${sc[@]}" eval --task arithmetic --online --holdout 0.3 --no-reference --memory arithmetic-gated \
        ${LIMIT:+--limit $LIMIT} --out "$out/$name" --strategy program-aided:memory=on,single:memory=on ;;
      online-mbpp-gated) "${sc[@]}" memory clear mbpp-gated --yes
        "${sc[@]}" eval --task mbpp --max-tokens 200 --online --holdout 0.3 --no-reference --memory mbpp-gated \
        --limit "${LIMIT:-50}" --out "$out/$name" --strategy self-debug:memory=on ;;
      feedback-stream) "${PYTHON:-.venv/bin/python}" docs/findings/feedback_stream.py --out "$out/$name" \
        ${LIMIT:+--requests $LIMIT} ;;
      # selfcorrect improve (issue 24), label-free; the rounds' models stay under .selfcorrect/improve,
      # the reports and the recipe are copied here.
      improve-arithmetic) [ -n "$("${sc[@]}" models lineage 2>/dev/null | grep -w base)" ] || "${sc[@]}" models export
        "${sc[@]}" improve --task arithmetic:n=600 --limit "${LIMIT:-600}" --rounds 2 --labels none \
          --probe arithmetic:digits=3,n=100,seed=2 --curriculum arithmetic:digits=3,n=100,seed=1 --per-item 1 \
          --budget-minutes 60 --out .selfcorrect/improve/arith
        mkdir -p "$out/$name" && cp .selfcorrect/improve/arith/{report.md,report.json,report.html,recipe.json} "$out/$name/" ;;
      # The arithmetic study redrawn (issue 34): split by the question, a confirmation split (15%),
      # and round 1's shuffled control; each round's data committed (gzip) so anyone can check it.
      improve-arithmetic-redrawn)
        # ROUNDS=1: round 1 and its control only (what the session of 2026-12-07 ran: 27 minutes)
        "${sc[@]}" improve --task arithmetic:n=600 --limit "${LIMIT:-600}" --rounds "${ROUNDS:-2}" --labels none \
          --probe arithmetic:digits=3,n=100,seed=2 --curriculum arithmetic:digits=3,n=100,seed=1 --per-item 1 \
          --control shuffled --confirmation 0.15 --budget-minutes 90 --out .selfcorrect/improve/arith-redrawn
        keep_run .selfcorrect/improve/arith-redrawn "$out/$name" ;;
      # MBPP: best-of-n by the visible tests teaches, the hidden tests measure; 300 items (~150 each side).
      improve-mbpp) [ -n "$("${sc[@]}" models lineage 2>/dev/null | grep -w base)" ] || "${sc[@]}" models export
        "${sc[@]}" improve --task mbpp --limit "${LIMIT:-300}" --rounds 3 --patience 3 --budget-minutes 58 --labels none \
          --chains 1 --student-samples 1 --per-item 2 --out .selfcorrect/improve/mbpp
        mkdir -p "$out/$name" && cp .selfcorrect/improve/mbpp/{report.md,report.json,report.html,recipe.json} "$out/$name/" ;;
      # Where a round's time goes (issue 35): the arithmetic study with adaptive sampling, on a store of its
      # own (no draw from the cache: every phase's seconds are its own), rounds 1 and 2 (the curriculum's).
      improve-arithmetic-timed)
        "${PYTHON:-.venv/bin/python}" -m selfcorrect.cli --data "${DATA:-../shared/data}" --store "${TIMING_STORE:-.selfcorrect/timing.sqlite}" \
          improve --task arithmetic:n=600 --limit "${LIMIT:-600}" --rounds "${ROUNDS:-5}" --patience 2 --labels none \
          --probe arithmetic:digits=3,n=100,seed=2 --curriculum arithmetic:digits=3,n=100,seed=1 --per-item 1 \
          --confirmation 0.15 --budget-minutes "${BUDGET:-120}" --out .selfcorrect/improve/arith-timed
        keep_run .selfcorrect/improve/arith-timed "$out/$name" ;;
      # MBPP redrawn (issue 34): split by the question and 15% set aside for confirmation; the rounds' data committed.
      improve-mbpp-redrawn)
        "${sc[@]}" improve --task mbpp --limit "${LIMIT:-300}" --rounds 3 --patience 3 --budget-minutes "${BUDGET:-70}" --labels none \
          --chains 1 --student-samples 1 --per-item 2 --confirmation 0.15 --out .selfcorrect/improve/mbpp-redrawn
        keep_run .selfcorrect/improve/mbpp-redrawn "$out/$name" ;;
      # Self-training on arithmetic: 600 items split by item id into ~300 train and ~300 held out.
      train-*) [ -n "$("${sc[@]}" models lineage 2>/dev/null | grep -w base)" ] || "${sc[@]}" models export
        train=(--task arithmetic:n=600 --limit "${LIMIT:-600}" --heldout 0.5 --sample self-consistency:n=6)
        case $name in
          train-rft-gold) "${sc[@]}" train "${train[@]}" --evaluate single --rounds 2 --patience 2 --method rft --labels gold --out "$out/$name" ;;
          train-star-program) "${sc[@]}" train "${train[@]}" --evaluate single --rounds 2 --patience 2 --method star --labels program --out "$out/$name" ;;
          train-dpo-gold) "${sc[@]}" train "${train[@]}" --evaluate single --rounds 1 --method dpo --labels gold --per-item 2 --epochs 1 --out "$out/$name" ;;
          train-dpo-judge) "${sc[@]}" train "${train[@]}" --evaluate single --rounds 1 --method dpo --labels judge --per-item 2 --epochs 1 --out "$out/$name" ;;
          # issue 12: RL with the check as reward, and two-attempt self-correction training
          train-grpo) "${sc[@]}" train "${train[@]}" --evaluate single,self-correct:keep=last --rounds 1 --method grpo --grpo-steps 20 --generations 8 \
            --learning-rate 5e-5 --format-reward 0.1 --partial-credit --out "$out/$name" ;;
          train-score) "${sc[@]}" train "${train[@]}" --evaluate self-correct:keep=last,single,self-refine \
            --rounds 1 --method score --stage1-steps 10 --stage2-steps 10 --generations 4 --learning-rate 5e-5 \
            --out "$out/$name" ;;
          # SCoRe's offline baseline: SFT on correction traces from the base's own samples (Pair-SFT)
          train-correction) "${sc[@]}" train "${train[@]}" --evaluate self-correct:keep=last,single --rounds 1 \
            --method correction --traces pairs --out "$out/$name" ;;
          train-compare) "${sc[@]}" train-compare "$out/train-score" "$out/train-correction" "$out/train-grpo" \
            --out "$out/train-compare" ;;
          *) echo "unknown study $name" >&2; exit 1 ;;
        esac ;;
      # A PRM from the model's own rollouts on the first 200 arithmetic items (its train and
      # held-out sides), then search and voting with it on 200 items it never saw.
      verifier-prm) [ -n "$("${sc[@]}" models lineage 2>/dev/null | grep -w base)" ] || "${sc[@]}" models export
        "${sc[@]}" train-verifier --kind prm --task arithmetic:n=600 --limit "${LIMIT:-200}" --sample self-consistency:n=4 \
          --rollouts 4 --out "$out/$name" ;;
      search-prm) prm="prm:$out/verifier-prm/model"
        "${sc[@]}" eval --task arithmetic:n=600 --ids "400-$((400 + ${LIMIT:-200} - 1))" --pool-cap 32 --out "$out/$name" \
          --strategy "single,self-consistency:n=4,adaptive-consistency:n=8,confidence-vote:n=4,best-of-n:n=4,verifier=$prm,beam-search:n=4,width=2,scorer=$prm,dvts:n=4,width=2,scorer=$prm,mcts:simulations=8,children=2,scorer=$prm,beam-search:n=4,width=2,rollouts=2" ;;
      *) echo "unknown study $name (arithmetic, mbpp, gsm8k, online-arithmetic, online-arithmetic-feedback, online-mbpp)" >&2; exit 1 ;;
    esac
  done
done
