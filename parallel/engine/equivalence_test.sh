#!/usr/bin/env bash
# Runs equivalence_main under mpirun with tp*pp*dp ranks (oversubscribed on
# small machines). Usage: equivalence_test.sh BINARY CONFIG --tp T --pp P --dp D [flags...]
set -euo pipefail
source "$(dirname "$0")/../comm/mpi_test_env.sh"
bin="$1"; config="$2"; shift 2
tp=1; pp=1; dp=1
args=("$@")
for ((i = 0; i < ${#args[@]}; ++i)); do
  case "${args[i]}" in
    --tp) tp="${args[i+1]}" ;;
    --pp) pp="${args[i+1]}" ;;
    --dp) dp="${args[i+1]}" ;;
  esac
done
mpirun -np $((tp * pp * dp)) "$bin" --config "$config" "$@"
