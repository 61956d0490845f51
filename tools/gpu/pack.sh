#!/usr/bin/env bash
# Packs the CUDA test binaries and the shared libraries they need into one
# folder to carry to a GPU machine (which has the NVIDIA driver and CUDA 13 but
# no Bazel and no Debian packages). Run here, after
#   bazel build --config=cuda //ops/cuda/...
#
# Usage: tools/gpu/pack.sh [DEST]      (default DEST: runs/gpu, git-ignored)
# Result: DEST/bin/*_test, DEST/lib/*.so*, DEST/lib/compat/ (libstdc++, libgcc_s),
#         DEST/run_device_checks.sh,
#         DEST/MANIFEST.txt (what was packed, sizes, the newest GLIBC symbol needed).
#
# Not packed (the GPU machine provides them, and they are huge):
#   libcuda (the driver), libcudart/libcublas/libcublasLt (its CUDA 13),
#   glibc itself (libc, libm, libdl, libpthread, librt, ld-linux).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${1:-runs/gpu}"
BIN_SRC="bazel-bin/ops/cuda"

shopt -s nullglob
tests=("$BIN_SRC"/*_test)
if [[ ${#tests[@]} -eq 0 ]]; then
  echo "pack.sh: no test binaries in $BIN_SRC; build them first:" >&2
  echo "  bazel build --config=cuda //ops/cuda/..." >&2
  exit 1
fi

rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/lib"
for t in "${tests[@]}"; do
  [[ -x "$t" && -f "$t" ]] || continue
  cp -L "$t" "$DEST/bin/"
  chmod u+w "$DEST/bin/$(basename "$t")"
done
cp tools/gpu/run_device_checks.sh "$DEST/"

# Every shared library the binaries load, minus the ones the GPU machine provides.
skip='libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|/libc\.so|/libm\.so|/libdl\.so|/libpthread\.so|/librt\.so|ld-linux|linux-vdso'
missing=$(ldd "$DEST"/bin/* | grep 'not found' || true)
if [[ -n "$missing" ]]; then
  echo "pack.sh: libraries not found here:" >&2
  echo "$missing" >&2
  exit 1
fi
# libstdc++/libgcc_s go to lib/compat: GCC 12's libstdc++ needs glibc 2.36, so
# run_device_checks.sh uses them only when the machine's own are too old.
mkdir -p "$DEST/lib/compat"
ldd "$DEST"/bin/* | awk '/=>/ {print $3}' | sort -u | grep -v -E "$skip" | while read -r lib; do
  case "$(basename "$lib")" in
    libstdc++.so.*|libgcc_s.so.*) cp -L "$lib" "$DEST/lib/compat/" ;;
    *) cp -L "$lib" "$DEST/lib/" ;;
  esac
done

{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(pwd)"
  echo "nvcc: $(/usr/local/cuda/bin/nvcc --version | tail -1)"
  echo "binaries:"; (cd "$DEST/bin" && ls -l)
  echo "libraries:"; (cd "$DEST/lib" && ls -lR)
  echo "newest GLIBC symbol version needed by bin/ and lib/ (the machine's glibc must have it):"
  objdump -T "$DEST"/bin/* "$DEST"/lib/*.so* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV |
    tail -1
  echo "newest GLIBCXX needed (else lib/compat/libstdc++, which itself needs glibc 2.36):"
  objdump -T "$DEST"/bin/* "$DEST"/lib/*.so* 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*' |
    sort -uV | tail -1
  echo "total: $(du -sh "$DEST" | cut -f1)"
} > "$DEST/MANIFEST.txt"
cat "$DEST/MANIFEST.txt"
size_kb=$(du -sk "$DEST" | cut -f1)
if (( size_kb > 60 * 1024 )); then
  echo "pack.sh: WARNING: $DEST is ${size_kb} KiB; a device run carries at most 64 MiB" >&2
fi
