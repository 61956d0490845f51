#!/usr/bin/env bash
# The project's own batch scripts under a real (one-node) Slurm:
# tools/slurm/local_cluster.sh starts munged + slurmctld + slurmd, then three
# jobs of 4 ranks are submitted with sbatch:
#
#   train   single_node.sbatch, UT_TP=2 UT_PP=2: the real unified_train, 3 steps
#           of configs/tiny.textproto (small overrides, data generated into
#           the job's folder by rank 0)                          -> COMPLETED
#   mpirun  multi_node.sbatch --nodes=1, UT_TP=2 (DP=2), mpi_probe -> COMPLETED
#   fail    single_node.sbatch, mpi_probe rank 2 dies in step 3   -> FAILED, names task 2
#
# mpi_probe runs collectives over world/TP/DP/PP groups, checked against
# closed forms, and can kill one of its ranks on purpose.
#
# Usage: slurm_job_test.sh PATH_TO_MPI_PROBE PATH_TO_UNIFIED_TRAIN CONFIG.
# Runs outside the sandbox (tag "local"): the daemons need /proc, ports and a
# short socket path in /tmp.
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
ROOT="$PWD"  # the runfiles tree: launch/, tools/ and the binaries
PROGRAM="$ROOT/$1"
PROGRAM_ARGS="--steps=20 --step_ms=5 --expect_world=4 --timeout_s=30"
TRAIN="$ROOT/$2"
TRAIN_CONFIG="$ROOT/$3"
POLL_LIMIT_S=150

for b in munged slurmctld slurmd sbatch scontrol squeue srun; do
  command -v "$b" > /dev/null ||
    { echo "FAIL: '$b' not found; run tools/install_deps.sh (slurm-wlm, munge, slurm-client)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/ut_slurm_test.XXXXXX)"  # short: Unix socket paths
chmod 755 "$WORK"  # munged wants its socket's folders searchable by all
export UT_SLURM_DIR="$WORK/cluster"
MARKER="ut_slurm_job_test_$$_$RANDOM"
cleanup() {
  local rc=$?
  bash "$ROOT/tools/slurm/local_cluster.sh" stop || rc=1
  if pgrep -f "$MARKER" > /dev/null; then
    echo "FAIL: processes left behind: $(pgrep -af "$MARKER" | tr '\n' ';')" >&2
    pkill -KILL -f "$MARKER" || true
    rc=1
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # a Bazel timeout: still stop the cluster

t_start=$SECONDS
bash "$ROOT/tools/slurm/local_cluster.sh" start
eval "$(bash "$ROOT/tools/slurm/local_cluster.sh" env)"
echo "cluster up after $((SECONDS - t_start)) s"

# MPI as root, oversubscribed; per-job files in our own folder.
source "$ROOT/parallel/comm/mpi_test_env.sh"
export TMPDIR="$WORK" OMPI_MCA_btl_vader_backing_directory="$WORK"
export UT_ROOT="$ROOT" UT_BIN="$PROGRAM"

# submit NAME SCRIPT [sbatch options...]; UT_* for the job come from the caller's
# env. The marker (for finding leftover processes) goes on every rank's command
# line: mpi_probe takes --marker, unified_train gets it in its out_dir.
submit() {
  local name=$1 script=$2
  shift 2
  sbatch --parsable --job-name="$name" --output="$WORK/$name.out" "$@" \
    "$ROOT/launch/slurm/$script" "${MARKER_ARG:---marker=$MARKER}"
}
# The trainer job: tiny config, shrunk to a few seconds on 2 cores.
TRAIN_ARGS="--steps=3 --data.micro_batch_size=2 --data.seq_len=128 --train.grad_accum=2
  --train.eval_at_end=false --train.log_every=1 --objective.alpha=0.1
  --data.data_dir=$WORK/data --data.synthetic_train=64 --data.synthetic_val=8
  --data.synthetic_test=8"
t_submit=$SECONDS
# The two single-node jobs share the node (4 + 4 of its 8 CPUs); multi_node
# asks for --exclusive, so it runs after them.
JOB_TRAIN=$(UT_BIN="$TRAIN" UT_CONFIG="$TRAIN_CONFIG" UT_TP=2 UT_PP=2 UT_ARGS="$TRAIN_ARGS" \
  MARKER_ARG="--out_dir=$WORK/run_$MARKER" submit train single_node.sbatch --ntasks-per-node=4)
JOB_FAIL=$(UT_ARGS="$PROGRAM_ARGS --die_rank=2 --die_step=3" \
  submit fail single_node.sbatch --ntasks-per-node=4)
JOB_MPIRUN=$(UT_LAUNCHER=mpirun UT_TP=2 UT_ARGS="$PROGRAM_ARGS" \
  submit mpirun multi_node.sbatch --nodes=1 --ntasks-per-node=4)
echo "submitted jobs train=$JOB_TRAIN fail=$JOB_FAIL mpirun=$JOB_MPIRUN"

# sacct needs accounting, which this cluster has not: poll scontrol.
job_state() { scontrol show job "$1" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
is_final() { [[ "$1" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$ ]]; }
deadline=$((SECONDS + POLL_LIMIT_S))
for job in "$JOB_TRAIN" "$JOB_FAIL" "$JOB_MPIRUN"; do
  until is_final "$(job_state "$job")"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "FAIL: job $job is '$(job_state "$job")' after ${POLL_LIMIT_S} s" >&2
      squeue >&2 || true
      exit 1
    fi
    sleep 0.2
  done
done
echo "all jobs finished $((SECONDS - t_submit)) s after submission"

failures=0
check() {  # check JOB NAME EXPECTED_STATE; then lines to grep for in the output follow
  local job=$1 name=$2 want=$3 state out="$WORK/$2.out"
  shift 3
  state=$(job_state "$job")
  echo "job $job ($name): $state"
  local bad=0
  [ "$state" = "$want" ] || { echo "FAIL: job $name is $state, expected $want" >&2; bad=1; }
  local pattern
  for pattern in "$@"; do
    grep -Eq -- "$pattern" "$out" || { echo "FAIL: job $name output lacks /$pattern/" >&2; bad=1; }
  done
  if [ "$bad" -ne 0 ]; then
    echo "--- $out ---" >&2; cat "$out" >&2 || true
    failures=$((failures + 1))
  fi
}
# unified_train on TP=2 x PP=2 (DP=1): rank 0 alone prints the progress lines.
check "$JOB_TRAIN" train COMPLETED \
  '^ut_launch: 4 ranks on 1 node\(s\), 4 per node; TP=2 DP=1 PP=2' \
  '^ut_launch: srun --mpi=pmix .*unified_train --config=.*tiny.textproto --parallel.tp=2 --parallel.dp=1 --parallel.pp=2 ' \
  'model: [0-9]+ parameters on 4 ranks \(tp 2, pp 2, dp 1\)' \
  '^step 1/3 \| loss [0-9.]+ \(L_g [0-9.]+, L_d [0-9.]+\) \| lr ' \
  '^step 3/3 \| loss ' \
  "^done: $WORK/run_$MARKER\$" \
  '^ut_launch: srun exited with status 0'
if [ "$(grep -c '^step [0-9]*/3 ' "$WORK/train.out")" != 3 ]; then
  echo "FAIL: the train job should print 3 progress lines (rank 0 only)" >&2
  cat "$WORK/train.out" >&2
  failures=$((failures + 1))
fi
[ -f "$WORK/run_$MARKER/checkpoints/step_000003/COMPLETE" ] ||
  { echo "FAIL: the train job left no checkpoint of step 3" >&2; failures=$((failures + 1)); }
# TP=2, DP=2, PP=1: (tp, dp) = (r % 2, r / 2).
check "$JOB_MPIRUN" mpirun COMPLETED \
  '^ut_launch: 4 ranks on 1 node\(s\), 4 per node; TP=2 DP=2 PP=1' \
  '^ut_launch: mpirun -np 4 ' \
  '^mpi_probe: rank 0/4 .* tp 0 dp 0 pp 0$' \
  '^mpi_probe: rank 1/4 .* tp 1 dp 0 pp 0$' \
  '^mpi_probe: rank 2/4 .* tp 0 dp 1 pp 0$' \
  '^mpi_probe: rank 3/4 .* tp 1 dp 1 pp 0$' \
  '^mpi_probe: OK world=4 tp=2 dp=2 pp=1 steps=20' \
  '^ut_launch: mpirun exited with status 0'
check "$JOB_FAIL" fail FAILED \
  'rank 2 killing itself' \
  'task 2: Killed' \
  '^ut_launch: srun exited with status [1-9]'
if grep -q 'mpi_probe: OK' "$WORK/fail.out"; then
  echo "FAIL: the failing job reported OK" >&2
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "slurm_job_test: $failures job(s) failed their checks" >&2
  exit 1
fi
echo "slurm_job_test: 3 jobs checked, $((SECONDS - t_start)) s from cluster start to checks done"
