#!/usr/bin/env bash
# Runs the tensor-parallel model tests on 2 MPI ranks (oversubscribed on small
# machines). Args: the MPI test environment script, then the test binary.
set -euo pipefail
source "$1"
shift
mpirun -np 2 "$@"
