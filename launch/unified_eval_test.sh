#!/usr/bin/env bash
# Runs the real unified_eval binary on a checkpoint that unified_train writes
# (tiny shapes, 2 steps): good runs print the whole table and write JSON; each
# bad input exits 2 with one "unified_eval: error: ..." line naming the
# problem, and leaves the run untouched.
set -uo pipefail

TRAIN="$PWD/launch/unified_train"
EVAL="$PWD/launch/unified_eval"
CONFIG="$PWD/configs/tiny.textproto"
T="${TEST_TMPDIR:?run under bazel test}"
export GLOG_minloglevel=1  # warnings and errors only

fail() {
  echo "FAIL: $*"
  exit 1
}

TINY=(--model.vision.image_size=16 --model.vision.patch_size=4 --model.vision.width=16
      --model.vision.layers=1 --model.vision.heads=2 --model.vision.mlp=32
      --model.llm.width=32 --model.llm.layers=1 --model.llm.heads=2 --model.llm.kv_heads=1
      --model.llm.ffn=64 --model.llm.vocab_size=128 --model.retrieval_dim=16
      --data.tokenizer_vocab=128 --data.seq_len=160 --data.micro_batch_size=2
      --data.synthetic_train=16 --data.synthetic_val=4 --data.synthetic_test=80
      --data.data_dir="$T/data" --train.steps=2 --train.threads=1)

"$TRAIN" --config "$CONFIG" "${TINY[@]}" --out_dir="$T/run" --eval_samples=0 \
  >"$T/train.out" 2>"$T/train.err" || { cat "$T/train.err"; fail "training the fixture failed"; }
CKPT="$T/run/checkpoints/step_000002"
[[ -f "$CKPT/COMPLETE" ]] || fail "no checkpoint to evaluate"

snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
RUN_BEFORE=$(snapshot "$T/run")

ROWS=("loss (mean CE)" "caption exact-match" "VQA accuracy" "image->text R@1 / R@5"
      "text->image R@1 / R@5" "hard-negative text score" "Winoground text (swap pairs)"
      "Winoground image (swap pairs)" "Winoground group (swap pairs)"
      "story next panel R@1 / R@5")
expect_table() {  # FILE: every row present, with a number in the test column
  for row in "${ROWS[@]}"; do
    grep -F -- "$row" "$1" | grep -q '[0-9]' || { cat "$1"; fail "$1: no row '$row'"; }
  done
}

# --- good: the newest checkpoint of a run, config from the checkpoint ---
"$EVAL" --out_dir "$T/run" --eval_samples=100 >"$T/good.out" 2>"$T/good.err" ||
  { cat "$T/good.err"; fail "unified_eval --out_dir failed"; }
grep -q "^checkpoint $CKPT (step 2)" "$T/good.out" || { cat "$T/good.out"; fail "no header"; }
expect_table "$T/good.out"
JSON="$T/run/eval_step_000002.json"
[[ -f "$JSON" ]] || fail "no $JSON"
for key in '"checkpoint"' '"step": 2' '"test"' '"retrieval"' '"image_to_text_r1"' \
           '"winoground_pairs"' '"story_next_panel_r5"' '"caption_total"'; do
  grep -qF -- "$key" "$JSON" || fail "$JSON lacks $key"
done
rm "$JSON"

# --- good: an explicit checkpoint, an explicit config (+ the same overrides), two splits ---
"$EVAL" --checkpoint "$CKPT/" --config "$CONFIG" "${TINY[@]}" --split val,test \
  --json "$T/two.json" --eval_samples=100 >"$T/two.out" 2>"$T/two.err" ||
  { cat "$T/two.err"; fail "unified_eval --checkpoint failed"; }
head -4 "$T/two.out" | grep -q '| val .*| test' || { cat "$T/two.out"; fail "no val and test columns"; }
grep -qF '"val"' "$T/two.json" && grep -qF '"test"' "$T/two.json" || fail "two.json lacks a split"
# Same checkpoint, same numbers (the test column of both runs), with and without the KV cache.
"$EVAL" --checkpoint "$CKPT" --json "$T/nokv.json" --eval_samples=100 --no_kv_cache \
  >"$T/nokv.out" 2>"$T/nokv.err" || { cat "$T/nokv.err"; fail "--no_kv_cache failed"; }
diff <(grep -v 'eval seconds\|^wrote' "$T/good.out") <(grep -v 'eval seconds\|^wrote' "$T/nokv.out") ||
  fail "--no_kv_cache changed the table"

# --- bad inputs ---
expect_error() {  # NAME PATTERN ARGS...
  local name=$1 pattern=$2
  shift 2
  "$EVAL" "$@" >"$T/$name.out" 2>"$T/$name.err"
  local rc=$?
  echo "--- $name: exit $rc: $(grep 'unified_eval: error:' "$T/$name.err")"
  [[ $rc == 2 ]] || { cat "$T/$name.err"; fail "$name: exit code $rc, expected 2"; }
  [[ $(grep -c 'unified_eval: error:' "$T/$name.err") == 1 ]] ||
    { cat "$T/$name.err"; fail "$name: expected exactly one error line"; }
  grep 'unified_eval: error:' "$T/$name.err" | grep -qF -- "$pattern" ||
    fail "$name: error line lacks '$pattern'"
}
expect_error no_source "give exactly one of --out_dir RUN" --split test
expect_error two_sources "give exactly one of --out_dir RUN" --out_dir "$T/run" --checkpoint "$CKPT"
expect_error bad_flag "flag '--bogus': unknown flag" --out_dir "$T/run" --bogus
expect_error zero_samples "flag '--eval_samples=0': needs a positive integer" --out_dir "$T/run" \
  --eval_samples=0
expect_error no_run "--out_dir '$T/nope' is not a directory" --out_dir "$T/nope"
mkdir -p "$T/empty"
expect_error no_checkpoint "no complete checkpoint in $T/empty/checkpoints" --out_dir "$T/empty"
expect_error not_a_checkpoint "--checkpoint '$T/nope' is not a directory" --checkpoint "$T/nope"
expect_error no_split "split 'nope': no $T/data/nope.jsonl" --out_dir "$T/run" --split nope
# The full-size tiny config does not fit this checkpoint.
expect_error wrong_config "param_count" --checkpoint "$CKPT" --config "$CONFIG" \
  --data.data_dir="$T/data" --model.llm.vocab_size=128
grep -qF "$CKPT/state.json" "$T/wrong_config.err" || fail "wrong_config: file not named"
# An incomplete checkpoint (no COMPLETE) and a corrupt state.json.
cp -r "$CKPT" "$T/incomplete"
rm "$T/incomplete/COMPLETE"
expect_error incomplete "$T/incomplete/COMPLETE" --checkpoint "$T/incomplete"
cp -r "$CKPT" "$T/badstate"
echo '{"format": ' >"$T/badstate/state.json"
expect_error corrupt_state "$T/badstate/state.json is not valid JSON" --checkpoint "$T/badstate"
# A truncated weights file.
cp -r "$CKPT" "$T/trunc"
truncate -s -10 "$T/trunc/model.safetensors"
expect_error truncated "$T/trunc/model.safetensors" --checkpoint "$T/trunc"

# Apart from the default JSON (removed above), nothing in the run changed.
[[ "$(snapshot "$T/run")" == "$RUN_BEFORE" ]] || fail "unified_eval changed files in the run"

# --- --help documents every flag ---
"$EVAL" --help >"$T/help.out" 2>&1 || fail "--help exited non-zero"
for flag in --out_dir --checkpoint --config --split --json --eval_samples --no_kv_cache \
            --path.to.field=value --help; do
  grep -qF -- "$flag" "$T/help.out" || fail "--help does not mention $flag"
done
echo PASS
