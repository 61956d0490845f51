#!/usr/bin/env bash
# Runs the collective tests on 4 MPI ranks (oversubscribed on small machines).
set -euo pipefail
source "$(dirname "$0")/mpi_test_env.sh"
mpirun -np 4 "$@"
