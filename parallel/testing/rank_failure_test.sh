#!/usr/bin/env bash
# A rank that dies or hangs must bring the whole job down, quickly and
# visibly. 4 ranks of mpi_probe run a step loop of collectives under mpirun:
#
#   1. killed: the test sends SIGKILL to rank 2 mid-loop. OpenMPI notices the
#      dead process and ends the others; mpirun must exit non-zero within
#      60 s, naming rank 2, and no rank may finish normally.
#   2. hung:   the test stops rank 2 (SIGSTOP). Nobody dies, so only the
#      Communicator deadline (--timeout_s=3) can end the job: a peer's
#      collective times out, it logs rank/group/operation and calls
#      MPI_Abort, and mpirun ends every rank, the stopped one included.
#
# Both cases check that no process is left behind (pgrep on a unique marker
# in the command line) and print the measured time from fault to exit.
set -euo pipefail
source "$(dirname "$0")/../comm/mpi_test_env.sh"
PROBE="$1"
LIMIT_S=60
WORK="$(mktemp -d "${TEST_TMPDIR:-/tmp}/rank_failure.XXXXXX")"
failures=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
fail() { echo "FAIL [$CASE]: $*" >&2; failures=$((failures + 1)); }

# Runs one case: $1 name, $2 signal for rank 2 (KILL or STOP), $3 Communicator deadline.
run_case() {
  CASE="$1"
  local sig="$2" timeout_s="$3" dir="$WORK/$1" marker="ut_rank_failure_${1}_$$_$RANDOM"
  local failures_before=$failures
  mkdir -p "$dir"
  mpirun -np 4 "$PROBE" --steps=1000000 --step_ms=2 --timeout_s="$timeout_s" \
    --status_dir="$dir" --marker="$marker" > "$dir/out" 2>&1 &
  local mpirun_pid=$!

  # Wait until every rank has written its pid and the loop is running.
  local deadline=$((SECONDS + 30))
  until [ -s "$dir/rank0.pid" ] && [ -s "$dir/rank1.pid" ] && [ -s "$dir/rank2.pid" ] &&
      [ -s "$dir/rank3.pid" ] && grep -q 'step 3 ok' "$dir/out"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$mpirun_pid" 2>/dev/null; then
      fail "the step loop did not start within 30 s"; cat "$dir/out" >&2
      kill -KILL "$mpirun_pid" 2>/dev/null || true
      return
    fi
    sleep 0.05
  done

  local victim t0 rc=0
  victim=$(cat "$dir/rank2.pid")
  kill "-$sig" "$victim"
  t0=$(now)
  echo "[$CASE] sent SIG$sig to rank 2 (pid $victim)"

  # mpirun must return within LIMIT_S; if not, end it ourselves and fail.
  deadline=$((SECONDS + LIMIT_S))
  while kill -0 "$mpirun_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  if kill -0 "$mpirun_pid" 2>/dev/null; then
    fail "mpirun still running ${LIMIT_S} s after the fault"
    kill -KILL "$mpirun_pid" 2>/dev/null || true
  fi
  wait "$mpirun_pid" || rc=$?
  local t_exit
  t_exit=$(elapsed "$t0" "$(now)")

  # Every rank process gone (they are mpirun's children; allow a moment).
  deadline=$((SECONDS + 5))
  while pgrep -f "$marker" > /dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  local t_gone
  t_gone=$(elapsed "$t0" "$(now)")
  if pgrep -f "$marker" > /dev/null; then
    fail "processes left behind: $(pgrep -af "$marker" | tr '\n' ';')"
    pkill -KILL -f "$marker" || true
  fi

  echo "[$CASE] mpirun exit status $rc, ${t_exit} s after the fault; all ranks gone after ${t_gone} s"
  [ "$rc" -ne 0 ] || fail "mpirun exited 0 after a rank failed"
  awk -v t="$t_gone" -v l="$LIMIT_S" 'BEGIN { exit !(t <= l) }' ||
    fail "ranks took ${t_gone} s to exit (limit ${LIMIT_S} s)"
  local r status
  for r in 0 1 2 3; do
    status=$(cat "$dir/rank$r.status" 2>/dev/null || echo missing)
    echo "[$CASE] rank $r: $status"
    [ "$status" != ok ] || fail "rank $r finished normally although rank 2 failed"
  done
  if grep -q 'mpi_probe: OK' "$dir/out"; then fail "the job reported OK"; fi

  case "$sig" in
    KILL)
      grep -Eq 'process rank 2 .*exited on signal 9' "$dir/out" ||
        fail "output does not name rank 2 as killed by signal 9"
      ;;
    STOP)
      grep -q "did not finish within $timeout_s s" "$dir/out" ||
        fail "no Communicator deadline message in the output"
      # The Communicator aborts with error code 3, which mpirun returns. (Not
      # OpenMPI's "MPI_ABORT was invoked" text: with several ranks aborting at
      # once, mpirun sometimes garbles that help message.)
      [ "$rc" -eq 3 ] || fail "mpirun exit status $rc, expected 3 (MPI_Abort from the Communicator deadline)"
      ;;
  esac
  if [ "$failures" -gt "$failures_before" ]; then
    echo "--- output of [$CASE] ---" >&2
    grep -v 'step [0-9]* ok' "$dir/out" >&2 || true
  fi
}

# Deadline 20 s in the killed case: OpenMPI must act long before it fires.
run_case killed KILL 20
run_case hung STOP 3

if [ "$failures" -gt 0 ]; then
  echo "0 passed, $failures failed" >&2
  exit 1
fi
echo "rank_failure_test: both cases passed"
