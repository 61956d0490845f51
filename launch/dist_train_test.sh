#!/usr/bin/env bash
# unified_train's distributed path under mpirun (launch/dist_train.h), on a
# very small model (a few seconds in all):
#   1. TP2 x PP2, 4 steps: progress lines, metrics.jsonl, checkpoints, the
#      evaluation table (rank 0, gathered model), "done";
#      the same losses as the single-process run of the same config;
#   2. the run resumed from its step-2 checkpoint (TP2 x PP2 again) gives
#      bit-identical loss, L_g, L_d and grad-norm at steps 3 and 4;
#   3. the same checkpoint resumed as ONE process continues with the same
#      losses (within 1e-5: another summation order);
#   4. DP2 with ZeRO-1: resumed == uninterrupted, bit for bit (sharded m/v);
#   5. unified_eval reads a distributed checkpoint;
#   6. SIGTERM to one rank: every rank checkpoints and exits 130; resumed,
#      SIGUSR1 to mpirun does the same;
#   7. world size != tp*pp*dp: exit 2, one error line naming both.
set -uo pipefail
source "$PWD/parallel/comm/mpi_test_env.sh"
TRAIN="$PWD/launch/unified_train"
EVAL="$PWD/launch/unified_eval"
CONFIG="$PWD/configs/tiny.textproto"
T="${TEST_TMPDIR:?run under bazel test}"
export GLOG_minloglevel=1

fail() {
  echo "FAIL: $*"
  exit 1
}

source "$PWD/launch/small_model_args.sh"
SMALL+=(--train.ckpt_every=2 --train.keep_checkpoints=0 --steps=4)
TP2PP2=(--parallel.tp=2 --parallel.pp=2)

# run NAME NP ARGS...: mpirun -np NP (NP 0: no mpirun), output in $T/NAME.{out,err}.
run() {
  local name=$1 np=$2
  shift 2
  if [[ $np == 0 ]]; then
    "$TRAIN" "$@" >"$T/$name.out" 2>"$T/$name.err"
  else
    mpirun -np "$np" "$TRAIN" "$@" >"$T/$name.out" 2>"$T/$name.err"
  fi
  RC=$?
}
must_pass() { [[ $RC == 0 ]] || { cat "$T/$1.out" "$T/$1.err"; fail "$1: exit $RC"; }; }
# The step's losses and grad norm, one line per step: "step loss loss_g loss_d grad_norm".
losses() {
  sed -E 's/.*"step":([0-9]+),"loss":([^,]+),"loss_g":([^,]+),"loss_d":([^,]+),.*"grad_norm":([^,]+),.*/\1 \2 \3 \4 \5/' "$1"
}
# resume_copy FROM TO: the run FROM as if it had stopped after step 2.
resume_copy() {
  cp -r "$T/$1" "$T/$2"
  rm -rf "$T/$2/checkpoints/step_000004"
}

# --- 1. TP2 x PP2 from scratch (rank 0 generates the data) ---
run tp2pp2 4 "${SMALL[@]}" "${TP2PP2[@]}" --out_dir="$T/a" --eval_samples=2
must_pass tp2pp2
[[ $(grep -c '^step [1-4]/4 | loss [0-9.]* (L_g [0-9.]*, L_d [0-9.]*) | lr ' "$T/tp2pp2.out") == 4 ]] ||
  { cat "$T/tp2pp2.out"; fail "tp2pp2: expected 4 progress lines, from rank 0 only"; }
grep -q "^done: $T/a\$" "$T/tp2pp2.out" || fail "tp2pp2: no 'done' line"
grep -q '^loss (mean CE) ' "$T/tp2pp2.out" || { cat "$T/tp2pp2.out"; fail "tp2pp2: no evaluation table"; }
for f in config.textproto metrics.jsonl eval.json checkpoints/step_000002/COMPLETE \
         checkpoints/step_000004/COMPLETE checkpoints/step_000004/model.safetensors \
         checkpoints/step_000004/optimizer.safetensors; do
  [[ -f "$T/a/$f" ]] || fail "tp2pp2: no $f"
done
[[ $(wc -l <"$T/a/metrics.jsonl") == 4 ]] || fail "tp2pp2: metrics.jsonl should have 4 lines"
run single 0 "${SMALL[@]}" --out_dir="$T/single"
must_pass single
# within_tol FILE_A FILE_B: every number within 1e-5 relative, same steps.
within_tol() {
  paste -d' ' <(losses "$1") <(losses "$2") | awk '
    { if ($1 != $6) { print "step " $1 " vs " $6; bad = 1 }
      for (i = 2; i <= 5; ++i) { d = $i - $(i + 5); if (d < 0) d = -d; s = $(i + 5); if (s < 0) s = -s
        if (!(d <= 1e-5 * s)) { print "step " $1 " field " i ": " $i " vs " $(i + 5); bad = 1 } } }
    END { exit bad }'
}
within_tol "$T/a/metrics.jsonl" "$T/single/metrics.jsonl" ||
  fail "TP2 x PP2 and single-process losses differ (above)"
[[ $(losses "$T/a/metrics.jsonl" | awk '$4 > 0' | wc -l) == 4 ]] || fail "L_d should be on"

# --- 2. resume TP2 x PP2 from step 2: bit-identical ---
resume_copy a b
run resume 4 "${SMALL[@]}" "${TP2PP2[@]}" --out_dir="$T/b" --resume
must_pass resume
grep -q "^step 3/4" "$T/resume.out" || { cat "$T/resume.out"; fail "resume: did not start at step 3"; }
diff <(losses "$T/a/metrics.jsonl") <(losses "$T/b/metrics.jsonl") ||
  fail "resumed TP2 x PP2 run differs from the uninterrupted one"

# --- 3. the TP2 x PP2 checkpoint resumed as one process ---
resume_copy a c
run resume_single 0 "${SMALL[@]}" --out_dir="$T/c" --resume
must_pass resume_single
within_tol "$T/a/metrics.jsonl" "$T/c/metrics.jsonl" ||
  fail "single process resumed from a TP2 x PP2 checkpoint differs (above)"

# --- 4. DP2 + ZeRO-1: resumed == uninterrupted ---
DP2=(--parallel.dp=2 --parallel.zero1=true --train.grad_accum=1)
run zero 2 "${SMALL[@]}" "${DP2[@]}" --out_dir="$T/z"
must_pass zero
resume_copy z z2
run zero_resume 2 "${SMALL[@]}" "${DP2[@]}" --out_dir="$T/z2" --resume
must_pass zero_resume
diff <(losses "$T/z/metrics.jsonl") <(losses "$T/z2/metrics.jsonl") ||
  fail "resumed DP2 ZeRO-1 run differs from the uninterrupted one"

# --- 5. unified_eval on a distributed checkpoint ---
"$EVAL" --out_dir "$T/a" --eval_samples=2 >"$T/eval.out" 2>"$T/eval.err" ||
  { cat "$T/eval.err"; fail "unified_eval on the TP2 x PP2 checkpoint failed"; }
grep -q "(step 4)" "$T/eval.out" || { cat "$T/eval.out"; fail "unified_eval: no step 4"; }

# --- 6. SIGTERM to one rank: all checkpoint, exit 130 ---
mpirun -np 4 "$TRAIN" "${SMALL[@]}" "${TP2PP2[@]}" --steps=100000 --out_dir="$T/sig" \
  >"$T/sig.out" 2>"$T/sig.err" &
MPIRUN=$!
for _ in $(seq 300); do
  [[ -f "$T/sig/metrics.jsonl" && $(wc -l <"$T/sig/metrics.jsonl") -ge 2 ]] && break
  sleep 0.1
done
RANKS=($(pgrep -P "$MPIRUN"))
[[ ${#RANKS[@]} == 4 ]] || { kill "$MPIRUN"; fail "expected 4 rank processes, got ${RANKS[*]}"; }
kill -TERM "${RANKS[3]}"
wait "$MPIRUN"
RC=$?
[[ $RC == 130 ]] || { cat "$T/sig.out" "$T/sig.err"; fail "SIGTERM: exit $RC, expected 130"; }
STOP=$(sed -nE 's/^stopped at step ([0-9]+); continue with --resume$/\1/p' "$T/sig.out")
[[ -n $STOP ]] || { cat "$T/sig.out"; fail "SIGTERM: no 'stopped at step' line"; }
[[ -f "$T/sig/checkpoints/$(printf 'step_%06d' "$STOP")/COMPLETE" ]] ||
  fail "SIGTERM: no checkpoint of step $STOP"

# ... and SIGUSR1 to mpirun (which forwards it) stops the resumed run the same way.
mpirun -np 4 "$TRAIN" "${SMALL[@]}" "${TP2PP2[@]}" --steps=100000 --out_dir="$T/sig" --resume \
  >"$T/sig2.out" 2>"$T/sig2.err" &
MPIRUN=$!
for _ in $(seq 300); do
  [[ $(wc -l <"$T/sig/metrics.jsonl") -ge $((STOP + 2)) ]] && break
  sleep 0.1
done
kill -USR1 "$MPIRUN"
wait "$MPIRUN"
RC=$?
[[ $RC == 130 ]] || { cat "$T/sig2.out" "$T/sig2.err"; fail "SIGUSR1 to mpirun: exit $RC, expected 130"; }
STOP2=$(sed -nE 's/^stopped at step ([0-9]+); continue with --resume$/\1/p' "$T/sig2.out")
[[ -n $STOP2 && $STOP2 -gt $STOP ]] || { cat "$T/sig2.out"; fail "SIGUSR1: did not resume and stop later"; }
grep -q "^step $((STOP + 1))/100000 " "$T/sig2.out" || fail "SIGUSR1 run did not resume at step $((STOP + 1))"
[[ -f "$T/sig/checkpoints/$(printf 'step_%06d' "$STOP2")/COMPLETE" ]] ||
  fail "SIGUSR1: no checkpoint of step $STOP2"

# --- 7. the world does not match the grid ---
run mismatch 3 "${SMALL[@]}" "${TP2PP2[@]}" --out_dir="$T/m"
[[ $RC == 2 ]] || fail "world 3 vs grid 4: exit $RC, expected 2"
[[ $(grep -c 'unified_train: error:' "$T/mismatch.err") == 1 ]] ||
  { cat "$T/mismatch.err"; fail "world 3 vs grid 4: expected one error line"; }
grep -q 'world size 3 != parallel.tp x dp x pp = 2 x 1 x 2 = 4' "$T/mismatch.err" ||
  { cat "$T/mismatch.err"; fail "world 3 vs grid 4: the error should name both"; }
[[ ! -e "$T/m" ]] || fail "world 3 vs grid 4: out_dir was created"

echo "dist_train_test: all checks passed"
