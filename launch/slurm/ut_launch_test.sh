#!/usr/bin/env bash
# ut_launch.sh without Slurm: a fake allocation in the environment and
# UT_DRY_RUN=1, so only the grid arithmetic, the checks and the command line
# are exercised. The real thing runs in slurm_job_test.sh.
set -euo pipefail
PROBE="$PWD/$1"
LAUNCH="$PWD/launch/slurm/ut_launch.sh"
for v in $(compgen -e | grep -E '^(SLURM_|UT_|OMP_|NCCL_)' || true); do unset "$v"; done
failures=0
OUT="${TEST_TMPDIR:-/tmp}/ut_launch_test.out"

# expect_ok NAME PATTERN... : the last command succeeded and its output matches every pattern.
# expect_fail NAME PATTERN...: it exited 2 and its output matches.
run() { set +e; "$@" > "$OUT" 2>&1; RC=$?; set -e; }
matches() {
  local name=$1 p
  shift
  for p in "$@"; do
    grep -Eq -- "$p" "$OUT" || { echo "FAIL [$name]: output lacks /$p/"; cat "$OUT"; failures=$((failures + 1)); return; }
  done
}
expect_ok() {
  [ "$RC" -eq 0 ] || { echo "FAIL [$1]: exit $RC"; cat "$OUT"; failures=$((failures + 1)); return; }
  matches "$@"
}
expect_fail() {
  [ "$RC" -eq 2 ] || { echo "FAIL [$1]: exit $RC, expected 2"; cat "$OUT"; failures=$((failures + 1)); return; }
  matches "$@"
}

# One node, 8 ranks, TP=2 PP=2 -> DP=2; config, UT_ARGS and positional flags in order.
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=8 SLURM_JOB_NUM_NODES=1 SLURM_CPUS_ON_NODE=32 \
  UT_TP=2 UT_PP=2 UT_CONFIG=configs/small.textproto UT_ARGS="--steps=5 --x.y=1" "$LAUNCH" --last=1
expect_ok single_node \
  'ut_launch: 8 ranks on 1 node\(s\), 8 per node; TP=2 DP=2 PP=2 \(rank = tp \+ dp\*2 \+ pp\*4\); OMP_NUM_THREADS=4 OMP_PROC_BIND=unset' \
  "ut_launch: srun --mpi=pmix --kill-on-bad-exit=1 --distribution=block --ntasks=8 --ntasks-per-node=8 $PROBE --config=configs/small.textproto --parallel.tp=2 --parallel.dp=2 --parallel.pp=2 --steps=5 --x.y=1 --last=1\$"

# 64 ranks on 8 nodes with mpirun, TP=8 PP=4 -> DP=2; NCCL variables forwarded; binding -> OMP binding.
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=64 SLURM_JOB_NUM_NODES=8 SLURM_CPUS_PER_TASK=12 \
  UT_TP=8 UT_PP=4 UT_LAUNCHER=mpirun NCCL_IB_HCA=mlx5_0 UT_MPIRUN_FLAGS="--bind-to core" "$LAUNCH"
expect_ok multi_node_mpirun \
  'ut_launch: 64 ranks on 8 node\(s\), 8 per node; TP=8 DP=2 PP=4 \(rank = tp \+ dp\*8 \+ pp\*16\); OMP_NUM_THREADS=12 OMP_PROC_BIND=close' \
  'ut_launch: mpirun -np 64 --map-by ppr:8:node --bind-to none .*-x NCCL_IB_HCA ' \
  '-x NCCL_DEBUG ' '-x OMP_NUM_THREADS ' '-x OMP_PLACES ' \
  "--bind-to core $PROBE --parallel.tp=8 --parallel.dp=2 --parallel.pp=4\$"

# Grid flags off (for programs that do not take them); an explicit OMP_NUM_THREADS wins.
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=2 UT_GRID_FLAGS=0 OMP_NUM_THREADS=3 "$LAUNCH" --a=1
expect_ok no_grid_flags 'OMP_NUM_THREADS=3 ' "--ntasks-per-node=2 $PROBE --a=1\$"

# The batch scripts find the launcher from the submit folder and pass flags through.
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=4 SLURM_SUBMIT_DIR="$PWD" \
  bash launch/slurm/single_node.sbatch --steps=3
expect_ok single_node_sbatch "--parallel.tp=1 --parallel.dp=4 --parallel.pp=1 --steps=3\$"
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=16 SLURM_JOB_NUM_NODES=2 SLURM_SUBMIT_DIR="$PWD" \
  UT_TP=8 bash launch/slurm/multi_node.sbatch
expect_ok multi_node_sbatch '16 ranks on 2 node\(s\), 8 per node; TP=8 DP=2 PP=1'
run env SLURM_NTASKS=4 SLURM_SUBMIT_DIR=/nonexistent bash launch/slurm/single_node.sbatch
expect_fail sbatch_wrong_root 'ut_launch.sh not found: submit from the repository root or set UT_ROOT'

# Layouts that must be refused, each with the reason.
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=8 UT_TP=3 "$LAUNCH"
expect_fail tp_not_dividing 'not divisible by TP\*PP = 3\*1'
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=16 SLURM_JOB_NUM_NODES=4 UT_TP=8 "$LAUNCH"
expect_fail tp_spans_nodes '4 ranks per node is not a multiple of TP=8: a TP group would span nodes'
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=10 SLURM_JOB_NUM_NODES=4 "$LAUNCH"
expect_fail uneven_nodes '10 ranks do not spread evenly over 4 nodes'
run env UT_DRY_RUN=1 UT_BIN="$PROBE" "$LAUNCH"
expect_fail no_allocation 'no rank count: run inside a Slurm allocation'
run env UT_DRY_RUN=1 UT_BIN=/nonexistent/unified_train SLURM_NTASKS=4 "$LAUNCH"
expect_fail missing_binary "program '/nonexistent/unified_train' is not an executable file"
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=4 UT_LAUNCHER=ssh "$LAUNCH"
expect_fail bad_launcher "UT_LAUNCHER='ssh': use srun or mpirun"
run env UT_DRY_RUN=1 UT_BIN="$PROBE" SLURM_NTASKS=4 UT_PP=x "$LAUNCH"
expect_fail bad_number "PP='x' must be a positive integer"

if [ "$failures" -gt 0 ]; then
  echo "ut_launch_test: $failures check(s) failed"
  exit 1
fi
echo "ut_launch_test: all checks passed"
