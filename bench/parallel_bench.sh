#!/usr/bin/env bash
# Runs bench/parallel_bench (the distributed step of tiny) on every small
# TP x PP x DP layout with the right mpirun -np, then prints two markdown
# tables: (1) step time, tokens/s, speed-up, bytes per group, DP overlap per
# layout; (2) the pipeline bubble, measured vs closed form, for PP = 2, 4.
#
#   bazel build //bench:parallel_bench && bench/parallel_bench.sh
#   env: BIN (default: the built binary under bazel-bin or bazel-out/*/bin),
#   STEPS (measured steps per layout and round, default 5), ROUNDS (passes over
#   the layout list, default 2), BUBBLE_STEPS (default 3), KEEP_LOGS=1
#
# On a shared machine the load changes between layouts, so the layout list is
# run ROUNDS times and each layout reports its best round (the round with the
# lowest median step): every round's median is printed beside it.
#
# Every rank runs one thread (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1),
# except the "1 rank, 2 threads" reference row. More ranks than cores
# oversubscribe (ranks yield when idle). Takes ~3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# bazel-bin follows the last build's -c mode: take the newest binary of the
# output trees.
if [[ -z "${BIN:-}" ]]; then
  BIN="$(ls -t bazel-out/*/bin/bench/parallel_bench 2>/dev/null | head -1 || true)"
fi
BIN="${BIN:-bazel-bin/bench/parallel_bench}"
STEPS="${STEPS:-5}"
ROUNDS="${ROUNDS:-2}"
BUBBLE_STEPS="${BUBBLE_STEPS:-3}"
CONFIG=configs/tiny.textproto
[[ -x "$BIN" ]] || { echo "no $BIN: run 'bazel build //bench:parallel_bench' first" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "mpirun not found: apt-get install openmpi-bin" >&2; exit 1; }

WORK="$(mktemp -d /tmp/parallel_bench.XXXXXX)"
[[ "${KEEP_LOGS:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export TMPDIR="$WORK" OMPI_MCA_btl_vader_backing_directory="$WORK"
export GLOG_minloglevel=1 GLOG_logtostderr=1
ROWS="$WORK/rows.txt"
: > "$ROWS"

# run LABEL THREADS TP PP DP [extra flags...]: one mpirun, its ROW line kept.
run() {
  local label="$1" threads="$2" tp="$3" pp="$4" dp="$5"
  shift 5
  local log="$WORK/$label.$RANDOM.log"
  if ! OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" \
      mpirun -np $((tp * pp * dp)) "$BIN" --config "$CONFIG" --data_dir "$WORK/data" \
      --label "$label" --tp "$tp" --pp "$pp" --dp "$dp" "$@" > "$log" 2>&1; then
    echo "layout $label failed (mpirun -np $((tp * pp * dp)) $BIN ... $*); its errors:" >&2
    grep -m10 -E '^[EF][0-9]{8} |Check failed|rror' "$log" >&2 || tail -20 "$log" >&2
    exit 1
  fi
  grep '^ROW ' "$log" >> "$ROWS"
  echo "  done: $label" >&2
}

start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; ++round)); do
  echo "running layouts, round $round of $ROUNDS (global batch 8 micro-batches x 2, L_d on) ..." >&2
  run 1r1t       1 1 1 1 --steps "$STEPS"
  run 1r2t       2 1 1 1 --steps "$STEPS"
  run tp2        1 2 1 1 --steps "$STEPS"
  run pp2        1 1 2 1 --steps "$STEPS"
  run dp2        1 1 1 2 --steps "$STEPS"
  run dp2z       1 1 1 2 --steps "$STEPS" --zero1
  run tp2pp2     1 2 2 1 --steps "$STEPS"
  run tp2dp2     1 2 1 2 --steps "$STEPS"
  run tp2dp2z    1 2 1 2 --steps "$STEPS" --zero1
  run pp2dp2     1 1 2 2 --steps "$STEPS"
  run pp2dp2z    1 1 2 2 --steps "$STEPS" --zero1
  run pp4        1 1 4 1 --steps "$STEPS"
  run dp4        1 1 1 4 --steps "$STEPS"
  run dp4z       1 1 1 4 --steps "$STEPS" --zero1
done
echo "running pipeline bubble rows ..." >&2
for m in 4 8 16; do
  run "bub_p2_v1_m$m" 1 1 2 1 --global "$m" --steps "$BUBBLE_STEPS"
  run "bub_p2_v2_m$m" 1 1 2 1 --global "$m" --vs 2 --steps "$BUBBLE_STEPS"
  run "bub_p4_v1_m$m" 1 1 4 1 --global "$m" --layers 8 --steps "$BUBBLE_STEPS"
  run "bub_p4_v2_m$m" 1 1 4 1 --global "$m" --layers 8 --vs 2 --steps "$BUBBLE_STEPS"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores (ranks > $(nproc) oversubscribe)"
echo "load average before/after: $load_before / $load_after; wall $(( $(date +%s) - start )) s"
echo "model: $CONFIG (4 decoder layers unless 'layers' says 8), seq 160, L_d on (alpha 0.1, MICRO_BATCH pool, 2 cuts)"
echo
awk '
function kv(s,   n, a, i, p) {
  delete f; n = split(s, a, " ");
  for (i = 2; i <= n; ++i) { p = index(a[i], "="); f[substr(a[i], 1, p - 1)] = substr(a[i], p + 1) }
}
{
  kv($0); l = f["label"]
  if (!(l in best)) { order[++n] = l; best[l] = $0; rounds[l] = sprintf("%.3f", f["step_s"]); bs[l] = f["step_s"] + 0 }
  else { rounds[l] = rounds[l] " / " sprintf("%.3f", f["step_s"]); if (f["step_s"] + 0 < bs[l]) { bs[l] = f["step_s"] + 0; best[l] = $0 } }
}
END {
  print "Table 1: one optimizer step of a fixed global batch (8 micro-batches x 2 samples); step time = the slowest rank, median of " steps " steps after 1 warm-up, best of the rounds (the median of every round listed); KiB = payload bytes per rank per step that the rank sends into that group (a collective counts its send buffer, p2p counts sends only; mean over ranks; 0 = no group of >1 rank); load avg = the machine 1-minute load average at the end of the layout."
  print ""
  print "| layout (tp,pp,dp) | ZeRO-1 | ranks | threads/rank | A/DP rank | step s (best round) | round medians s | tokens/s | speed-up vs 1 rank | bubble | KiB tp | KiB dp | KiB pp | KiB dp_tp | KiB world | DP buckets started / done before Finish / all | Finish wait ms | load avg |"
  print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  base = 0
  for (i = 1; i <= n; ++i) {
    kv(best[order[i]]); if (f["label"] ~ /^bub_/) continue
    if (base == 0) base = f["tok_s"]
    ov = "-"
    if (f["zero1"] == 1) ov = "- (reduce-scatter)"
    else if (f["dp"] > 1) ov = f["started"] " / " f["done"] " / " f["buckets"]
    name = "(" f["tp"] "," f["pp"] "," f["dp"] ")"
    zero = (f["zero1"] == 1) ? "yes" : "no"
    bub = "-"
    if (f["pp"] > 1) bub = sprintf("%.3f", f["bubble"])
    wait = "-"
    if (f["zero1"] != 1 && f["dp"] > 1) wait = sprintf("%.1f", f["finish_ms"])
    printf "| %s | %s | %d | %s | %d | %.3f | %s | %.0f | %.2f | %s | %.1f | %.1f | %.1f | %.1f | %.2f | %s | %s | %.1f |\n", name, zero, f["ranks"], f["threads"], f["M"], f["step_s"], rounds[order[i]], f["tok_s"], f["tok_s"] / base, bub, f["kib_tp"], f["kib_dp"], f["kib_pp"], f["kib_dptp"], f["kib_world"], ov, wait, f["load"]
  }
  print ""
  print "Table 2: pipeline bubble (tp = dp = 1, one thread per rank). measured = 1 - sum(busy)/(stages x max(wall)) over the stages (GroupBubbleFraction), median of the steps; closed = (p-1)/(v*m+p-1); closed +imbalance = an estimate: the closed form on the busiest stage, the other stages idle for their shortfall = 1 - (1-closed) x mean(busy)/max(busy), busy = time inside Forward/Backward. fwd/bwd ms = mean time of one chunk pass."
  print ""
  print "| PP | v | layers | M | measured | closed form | closed +imbalance | simulator (uniform ops) | fwd ms | bwd ms | step s | load avg |"
  print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for (i = 1; i <= n; ++i) {
    kv(best[order[i]]); if (f["label"] !~ /^bub_/) continue
    printf "| %d | %d | %d | %d | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | %.3f | %.1f |\n", f["pp"], f["vs"], f["layers"], f["M"], f["bubble"], f["closed"], f["imbal"], f["sim"], f["fwd_ms"], f["bwd_ms"], f["step_s"], f["load"]
  }
}' steps="$STEPS" "$ROWS"
