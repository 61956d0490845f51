# Environment for running mpirun inside Bazel's test sandbox (see TOOLCHAIN.md):
# root is allowed, ranks may oversubscribe the cores and yield when idle, and
# every job keeps its session and shared-memory files in its own TEST_TMPDIR so
# two MPI tests running at once do not collide.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=1
export TMPDIR="${TEST_TMPDIR:-${TMPDIR:-/tmp}}"
export OMPI_MCA_btl_vader_backing_directory="$TMPDIR"
export OMP_NUM_THREADS=1
unset TEST_PREMATURE_EXIT_FILE  # one file per test, not per rank
