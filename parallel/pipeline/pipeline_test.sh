#!/usr/bin/env bash
# Runs the pipeline executor tests with one stage per MPI rank: $1 = number
# of ranks (pipeline stages), $2 = the test binary (oversubscribed on small
# machines).
set -euo pipefail
source "$(dirname "$0")/../comm/mpi_test_env.sh"
NP="$1"
shift
mpirun -np "$NP" "$@"
