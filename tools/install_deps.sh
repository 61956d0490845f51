#!/usr/bin/env bash
# Installs what unified_train needs to build and test on Debian 12. Idempotent:
# packages already present are left alone. Run as root (or with sudo).
set -euo pipefail
PKGS=(
  bazel-bootstrap bazel-rules-java bazel-platforms
  g++ openmpi-bin libopenmpi-dev
  libgoogle-glog-dev libgflags-dev libprotobuf-dev protobuf-compiler libabsl-dev
  libgtest-dev libbenchmark-dev libopenblas-dev nlohmann-json3-dev libstb-dev
  libsentencepiece-dev
  # Launch tests: a real one-node Slurm (tools/slurm/local_cluster.sh) with
  # PMIx for `srun --mpi=pmix`; pgrep checks that no rank is left behind.
  slurm-wlm slurm-client munge libpmix2 procps
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install_deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all ${#PKGS[@]} packages present"
fi
