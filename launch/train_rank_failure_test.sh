#!/usr/bin/env bash
# A rank of a real training job (unified_train, TP2 x PP2, 4 ranks under
# mpirun) that dies or hangs mid-step must end the whole job within 60 s,
# visibly, leaving no process behind:
#
#   killed: SIGKILL to world rank 2 after step 3. OpenMPI sees the dead
#           process and ends the others; mpirun exits non-zero and names rank 2.
#   hung:   SIGSTOP to world rank 2. Nobody dies, so only the Communicator
#           deadline (parallel.comm_timeout_s = 3) can end it: a peer's
#           collective or pipeline receive times out, logs rank, group and
#           operation, and aborts the job (exit 3).
#
# (parallel/testing/rank_failure_test does the same with a probe program.)
set -uo pipefail
source "$PWD/parallel/comm/mpi_test_env.sh"
TRAIN="$PWD/launch/unified_train"
CONFIG="$PWD/configs/tiny.textproto"
T="${TEST_TMPDIR:?run under bazel test}"
LIMIT_S=60
failures=0
fail() { echo "FAIL [$CASE]: $*" >&2; failures=$((failures + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

source "$PWD/launch/small_model_args.sh"
SMALL+=(--train.ckpt_every=0 --steps=100000 --parallel.tp=2 --parallel.pp=2)

# The pid of world rank $2 among the processes whose command line holds $1.
rank_pid() {
  local p
  for p in $(pgrep -f "$1"); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"
      return
    fi
  done
}

run_case() {  # name signal
  CASE="$1"
  local sig="$2" out="$T/$1" before=$failures
  mkdir -p "$out"
  # The out_dir is unique to this case, so it marks this job's processes.
  mpirun -np 4 "$TRAIN" "${SMALL[@]}" --parallel.comm_timeout_s=3 --out_dir="$out/run" \
    > "$out/log" 2>&1 &
  local mpirun_pid=$! deadline=$((SECONDS + 60))
  until grep -q '^step 3/' "$out/log"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$mpirun_pid" 2>/dev/null; then
      fail "training did not reach step 3 within 60 s"; cat "$out/log" >&2
      kill -KILL "$mpirun_pid" 2>/dev/null || true
      return
    fi
    sleep 0.05
  done
  local victim
  victim=$(rank_pid "$out/run" 2)
  [ -n "$victim" ] || { fail "cannot find world rank 2"; kill -KILL "$mpirun_pid"; return; }
  kill "-$sig" "$victim"
  local t0 rc=0
  t0=$(now)
  echo "[$CASE] sent SIG$sig to world rank 2 (pid $victim) after step 3"
  deadline=$((SECONDS + LIMIT_S))
  while kill -0 "$mpirun_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  if kill -0 "$mpirun_pid" 2>/dev/null; then
    fail "mpirun still running ${LIMIT_S} s after the fault"
    kill -KILL "$mpirun_pid" 2>/dev/null || true
  fi
  wait "$mpirun_pid" || rc=$?
  local t_exit
  t_exit=$(elapsed "$t0" "$(now)")
  deadline=$((SECONDS + 5))
  while pgrep -f "$out/run" > /dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  if pgrep -f "$out/run" > /dev/null; then
    fail "processes left behind: $(pgrep -af "$out/run" | tr '\n' ';')"
    pkill -KILL -f "$out/run" || true
  fi
  echo "[$CASE] mpirun exit status $rc, ${t_exit} s after the fault"
  [ "$rc" -ne 0 ] || fail "mpirun exited 0 after a rank failed"
  grep -q '^done:' "$out/log" && fail "the job reported done"
  case "$sig" in
    KILL) grep -Eq 'process rank 2 .*exited on signal 9' "$out/log" ||
            fail "output does not name rank 2 as killed by signal 9" ;;
    STOP) grep -q 'did not finish within 3 s' "$out/log" ||
            fail "no Communicator deadline message (rank, group, operation) in the output"
          [ "$rc" -eq 3 ] || fail "mpirun exit status $rc, expected 3 (MPI_Abort from the deadline)" ;;
  esac
  if [ "$failures" -gt "$before" ]; then
    echo "--- output of [$CASE] ---" >&2
    grep -v '^step ' "$out/log" | tail -40 >&2
  else
    grep -m3 -E 'did not finish|exited on signal' "$out/log" | sed "s/^/[$CASE] /"
  fi
}

run_case killed KILL
run_case hung STOP
if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "train_rank_failure_test: both cases passed"
