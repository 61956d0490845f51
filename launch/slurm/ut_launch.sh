#!/usr/bin/env bash
# Starts one rank of BIN per Slurm task, with `srun --mpi=pmix` or `mpirun`.
# Run inside an allocation: the batch scripts next to this file call it; it
# also works in `salloc`. See docs/launch.md for the whole story.
#
#   ut_launch.sh [FLAGS FOR THE BINARY...]
#
# Parameters (environment; all optional):
#   UT_ROOT         repository root (default: two folders above this script)
#   UT_BIN          the program (default $UT_ROOT/bazel-bin/launch/unified_train)
#   UT_CONFIG       passed as --config=$UT_CONFIG
#   UT_ARGS         more flags for the program (split on spaces), before the
#                   positional arguments
#   UT_LAUNCHER     srun (default; PMIx) | mpirun (OpenMPI reads the allocation)
#   UT_NTASKS       ranks (default $SLURM_NTASKS)
#   UT_TP, UT_PP    tensor- and pipeline-parallel sizes (default 1). DP is
#                   ranks / (TP*PP). The program gets --parallel.tp=T
#                   --parallel.dp=D --parallel.pp=P unless UT_GRID_FLAGS=0.
#   UT_SRUN_FLAGS   extra srun flags, e.g. "--cpu-bind=cores"
#   UT_MPIRUN_FLAGS extra mpirun flags, e.g. "--mca pml ucx"
#   UT_DRY_RUN=1    print the command and exit (no ranks are started)
#
# Rank order (DESIGN.md section 4): rank = tp + dp*TP + pp*TP*DP, TP fastest.
# Both launchers place consecutive ranks on the same node (block
# distribution), so each TP group lives inside one node as long as the ranks
# per node are a multiple of TP; this script refuses other layouts.
#
# Environment defaults, set only when not already set (override any of them
# in the batch script or before sbatch; sbatch passes your environment on):
#   OMP_NUM_THREADS  $SLURM_CPUS_PER_TASK, else CPUs of the node / ranks per node
#   OMP_PROC_BIND=close OMP_PLACES=cores  only when ranks are bound to cores
#                    (UT_SRUN_FLAGS or UT_MPIRUN_FLAGS bind); without binding
#                    every rank's threads would share the first cores.
#   NCCL_DEBUG=WARN  (INFO to see rings/trees and the network chosen)
# NCCL variables worth knowing (not set here; cluster specific):
#   NCCL_SOCKET_IFNAME=ib0|eth0   interface for bootstrap/socket traffic
#   NCCL_IB_HCA=mlx5_0,mlx5_1     InfiniBand HCAs to use (prefix ^ excludes)
#   NCCL_IB_GID_INDEX=3           RoCE GID index
#   NCCL_NET_GDR_LEVEL, NCCL_P2P_LEVEL, NCCL_CROSS_NIC, NCCL_IB_TIMEOUT
#   NCCL_DEBUG_SUBSYS=INIT,NET  NCCL_DEBUG_FILE=nccl.%h.%p.log
set -euo pipefail

die() { echo "ut_launch: ERROR: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

UT_ROOT="${UT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BIN="${UT_BIN:-$UT_ROOT/bazel-bin/launch/unified_train}"
LAUNCHER="${UT_LAUNCHER:-srun}"
NTASKS="${UT_NTASKS:-${SLURM_NTASKS:-}}"
NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
TP="${UT_TP:-1}"
PP="${UT_PP:-1}"

[ -n "$NTASKS" ] || die "no rank count: run inside a Slurm allocation (sbatch/salloc with -n or --ntasks-per-node) or set UT_NTASKS"
[ -x "$BIN" ] || die "program '$BIN' is not an executable file: build it (bazel build //launch:unified_train) or set UT_BIN"
for v in NTASKS NNODES TP PP; do
  is_uint "${!v}" && [ "${!v}" -ge 1 ] || die "$v='${!v}' must be a positive integer"
done

# --- the grid ---------------------------------------------------------------
[ $((NTASKS % NNODES)) -eq 0 ] ||
  die "$NTASKS ranks do not spread evenly over $NNODES nodes; ask for --ntasks-per-node instead of -n"
PER_NODE=$((NTASKS / NNODES))
[ $((NTASKS % (TP * PP))) -eq 0 ] ||
  die "$NTASKS ranks are not divisible by TP*PP = $TP*$PP; choose ranks = TP*DP*PP"
[ $((PER_NODE % TP)) -eq 0 ] ||
  die "$PER_NODE ranks per node is not a multiple of TP=$TP: a TP group would span nodes; use --ntasks-per-node a multiple of TP"
DP=$((NTASKS / (TP * PP)))

# --- environment defaults ---------------------------------------------------
if [ -z "${OMP_NUM_THREADS:-}" ]; then
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"
  else
    cpus="${SLURM_CPUS_ON_NODE:-$(nproc)}"
    cpus="${cpus%%(*}"  # "16(x2)" style values
    OMP_NUM_THREADS=$((cpus / PER_NODE))
    [ "$OMP_NUM_THREADS" -ge 1 ] || OMP_NUM_THREADS=1
  fi
  export OMP_NUM_THREADS
fi
if [[ "${UT_SRUN_FLAGS:-} ${UT_MPIRUN_FLAGS:-}" =~ (cpu-bind=(cores|threads|sockets|map|mask|rank|ldoms))|(bind-to (core|hwthread|socket|numa|l3cache)) ]]; then
  export OMP_PROC_BIND="${OMP_PROC_BIND:-close}" OMP_PLACES="${OMP_PLACES:-cores}"
fi
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

# --- the command --------------------------------------------------------------
ARGS=()
[ -n "${UT_CONFIG:-}" ] && ARGS+=("--config=$UT_CONFIG")
if [ "${UT_GRID_FLAGS:-1}" != 0 ]; then
  ARGS+=("--parallel.tp=$TP" "--parallel.dp=$DP" "--parallel.pp=$PP")
fi
# shellcheck disable=SC2206  # UT_ARGS is a space-separated list on purpose
[ -n "${UT_ARGS:-}" ] && ARGS+=(${UT_ARGS})
ARGS+=("$@")

case "$LAUNCHER" in
  srun)
    # --kill-on-bad-exit: one rank failing ends the whole step (no hang).
    # --distribution=block: consecutive ranks fill a node first.
    # shellcheck disable=SC2206
    CMD=(srun --mpi=pmix --kill-on-bad-exit=1 --distribution=block --ntasks="$NTASKS"
         --ntasks-per-node="$PER_NODE" ${UT_SRUN_FLAGS:-} "$BIN" "${ARGS[@]}")
    ;;
  mpirun)
    # mpirun reads the Slurm allocation; ppr:N:node keeps the block order.
    # Forward every variable the ranks need (-x), for launchers that do not
    # pass the environment on by themselves.
    FORWARD=()
    while IFS= read -r name; do
      FORWARD+=(-x "$name")
    done < <(compgen -e | grep -E '^(NCCL_|OMP_|UCX_|CUDA_|GLOG_|UT_)' || true)
    # shellcheck disable=SC2206
    CMD=(mpirun -np "$NTASKS" --map-by "ppr:$PER_NODE:node" --bind-to none "${FORWARD[@]}"
         ${UT_MPIRUN_FLAGS:-} "$BIN" "${ARGS[@]}")
    ;;
  *) die "UT_LAUNCHER='$LAUNCHER': use srun or mpirun" ;;
esac

echo "ut_launch: $NTASKS ranks on $NNODES node(s), $PER_NODE per node; TP=$TP DP=$DP PP=$PP" \
  "(rank = tp + dp*$TP + pp*$((TP * DP))); OMP_NUM_THREADS=$OMP_NUM_THREADS" \
  "OMP_PROC_BIND=${OMP_PROC_BIND:-unset}" >&2
echo "ut_launch: ${CMD[*]}" >&2
[ "${UT_DRY_RUN:-0}" = 1 ] && exit 0

start=$SECONDS
set +e
"${CMD[@]}"
rc=$?
set -e
echo "ut_launch: $LAUNCHER exited with status $rc after $((SECONDS - start)) s" >&2
exit "$rc"
