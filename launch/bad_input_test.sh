#!/usr/bin/env bash
# Runs the real unified_train binary on bad inputs. Each must exit 2 with one
# clear "unified_train: error: ..." line naming the problem, and must leave
# existing files untouched (and create no new output directory).
# Also checks --help and one good run + resume end to end (tiny shapes).
set -uo pipefail

BIN="$PWD/launch/unified_train"
CONFIG="$PWD/configs/tiny.textproto"
T="${TEST_TMPDIR:?run under bazel test}"
export GLOG_minloglevel=1  # keep the logs short: warnings and errors only

fail() {
  echo "FAIL: $*"
  exit 1
}

# Shrinks the tiny config further so every run takes a second or two.
TINY=(--model.vision.image_size=16 --model.vision.patch_size=4 --model.vision.width=16
      --model.vision.layers=1 --model.vision.heads=2 --model.vision.mlp=32
      --model.llm.width=32 --model.llm.layers=1 --model.llm.heads=2 --model.llm.kv_heads=1
      --model.llm.ffn=64 --model.llm.vocab_size=128 --data.tokenizer_vocab=128
      --data.seq_len=64 --data.micro_batch_size=2 --data.synthetic_train=16
      --data.synthetic_val=4 --data.synthetic_test=4 --data.data_dir="$T/data"
      --train.steps=2 --train.log_every=1 --train.threads=1 --eval_samples=2)

# expect_error NAME PATTERN ARGS...: runs the binary, wants exit 2 and PATTERN
# in the one error line.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  "$BIN" "$@" >"$T/$name.out" 2>"$T/$name.err"
  local rc=$?
  echo "--- $name: exit $rc: $(grep 'unified_train: error:' "$T/$name.err")"
  [[ $rc == 2 ]] || { cat "$T/$name.err"; fail "$name: exit code $rc, expected 2"; }
  [[ $(grep -c 'unified_train: error:' "$T/$name.err") == 1 ]] ||
    { cat "$T/$name.err"; fail "$name: expected exactly one error line"; }
  grep 'unified_train: error:' "$T/$name.err" | grep -qF -- "$pattern" ||
    fail "$name: error line lacks '$pattern'"
}

# Content hashes of every file under a directory.
snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

# --- a good run: generates the data, trains 2 steps, checkpoints, evaluates ---
"$BIN" --config "$CONFIG" "${TINY[@]}" --out_dir="$T/run" >"$T/good.out" 2>"$T/good.err" ||
  { cat "$T/good.err"; fail "good run failed"; }
# The (L_g ..., L_d ...) part appears when the config turns L_d on (tiny does).
grep -q '^step 2/2 | loss [0-9.]* \((L_g [0-9.]*, L_d [0-9.]*) \)\?| lr [0-9.e+-]* | grad-norm [0-9.]* | [0-9]* tok/s | ETA ' \
  "$T/good.out" || { cat "$T/good.out"; fail "no progress line"; }
grep -q 'caption exact-match' "$T/good.out" || fail "no evaluation table"
for f in config.textproto metrics.jsonl eval.json checkpoints/step_000002/COMPLETE \
         checkpoints/step_000002/model.safetensors checkpoints/step_000002/optimizer.safetensors \
         checkpoints/step_000002/state.json; do
  [[ -f "$T/run/$f" ]] || fail "good run did not write $f"
done
RUN_BEFORE=$(snapshot "$T/run")

# --- --help documents every flag ---
"$BIN" --help >"$T/help.out" 2>&1 || fail "--help exited non-zero"
for flag in --config --out_dir --resume --steps --eval_samples --path.to.field=value --help; do
  grep -qF -- "$flag" "$T/help.out" || fail "--help does not mention $flag"
done

# --- config errors (checked before anything else) ---
sed 's/^train {/train { stepz: 3/' "$CONFIG" >"$T/unknown_field.textproto"
LINE=$(grep -n 'stepz' "$T/unknown_field.textproto" | cut -d: -f1)
expect_error unknown_field "unknown_field.textproto:$LINE:" --config "$T/unknown_field.textproto" \
  "${TINY[@]}" --out_dir="$T/run"
grep -qF 'stepz' "$T/unknown_field.err" || fail "unknown_field: message does not name 'stepz'"
expect_error unknown_override "has no scalar field 'stepz'" --config "$CONFIG" "${TINY[@]}" \
  --train.stepz=3 --out_dir="$T/run"
expect_error bad_value "cannot parse value 'abc'" --config "$CONFIG" "${TINY[@]}" --optim.lr=abc \
  --out_dir="$T/run"
expect_error bad_range "'train.steps': must be > 0" --config "$CONFIG" "${TINY[@]}" --steps=-3 \
  --out_dir="$T/run"
expect_error alpha "'objective.alpha' is -0.5; it must be finite and >= 0" --config "$CONFIG" \
  "${TINY[@]}" --objective.alpha=-0.5 --out_dir="$T/run"
expect_error delta "'objective.delta' is 0; it must be finite and > 0" --config "$CONFIG" \
  "${TINY[@]}" --objective.alpha=0.5 --objective.delta=0 --out_dir="$T/run"
expect_error missing_config "cannot open config file '$T/nope.textproto'" --config "$T/nope.textproto"

# --- bad flags ---
expect_error bad_flag "flag '--bogus': unknown flag" --bogus
expect_error flag_no_value "flag '--steps': needs a value" --steps
expect_error stray_arg "flag 'extra': unexpected argument" extra

# --- output directory: an existing run needs --resume; --resume needs a run ---
expect_error existing_run "already holds a run" --config "$CONFIG" "${TINY[@]}" --out_dir="$T/run"
expect_error resume_nothing "no complete checkpoint in $T/empty/checkpoints" --config "$CONFIG" \
  "${TINY[@]}" --out_dir="$T/empty" --resume
[[ ! -e "$T/empty" ]] || fail "resume_nothing created $T/empty"

# --- missing data directory with generation off ---
expect_error missing_data "data.data_dir '$T/nodata' has no train.jsonl" --config "$CONFIG" \
  "${TINY[@]}" --data.data_dir="$T/nodata" --data.generate_if_missing=false --out_dir="$T/out_nd"
[[ ! -e "$T/nodata" && ! -e "$T/out_nd" ]] || fail "missing_data created files"

# --- a corrupt image in a tiny manifest ---
mkdir -p "$T/badimg/img"
cp "$T/data/tokenizer.model" "$T/badimg/"
printf 'this is not a png' >"$T/badimg/img/broken.png"
for i in 1 2; do
  echo "{\"id\":\"s$i\",\"task\":\"caption\",\"slices\":[{\"image\":\"img/broken.png\"},{\"text\":\"a red circle\"}]}"
done >"$T/badimg/train.jsonl"
expect_error corrupt_image "img/broken.png" --config "$CONFIG" "${TINY[@]}" \
  --data.data_dir="$T/badimg" --out_dir="$T/out_img"
[[ ! -e "$T/out_img" ]] || fail "corrupt_image created the output directory"

# --- a truncated checkpoint ---
cp -r "$T/run" "$T/trunc"
CKPT="$T/trunc/checkpoints/step_000002"
truncate -s -10 "$CKPT/model.safetensors"
TRUNC_BEFORE=$(snapshot "$T/trunc")
expect_error truncated_ckpt "$CKPT/model.safetensors" --config "$CONFIG" "${TINY[@]}" \
  --out_dir="$T/trunc" --steps=3 --resume
grep -qF 'truncated or corrupt' "$T/truncated_ckpt.err" || fail "truncated_ckpt: no reason given"
[[ "$(snapshot "$T/trunc")" == "$TRUNC_BEFORE" ]] || fail "truncated_ckpt changed files"

# --- a corrupt state.json ---
cp -r "$T/run" "$T/badstate"
echo '{"format": "unified_train checkpoint v1", "step": ' >"$T/badstate/checkpoints/step_000002/state.json"
expect_error corrupt_state "step_000002/state.json" --config "$CONFIG" "${TINY[@]}" \
  --out_dir="$T/badstate" --resume

# None of the failed runs touched the good run.
[[ "$(snapshot "$T/run")" == "$RUN_BEFORE" ]] || fail "a failed run changed $T/run"

# --- and the good run resumes ---
"$BIN" --config "$CONFIG" "${TINY[@]}" --out_dir="$T/run" --steps=3 --resume \
  >"$T/resume.out" 2>"$T/resume.err" || { cat "$T/resume.err"; fail "resume failed"; }
grep -q '^step 3/3 |' "$T/resume.out" || fail "resume did not train step 3"
[[ -f "$T/run/checkpoints/step_000003/COMPLETE" ]] || fail "resume wrote no checkpoint"

echo "PASS"
