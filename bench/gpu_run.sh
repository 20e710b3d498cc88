#!/usr/bin/env bash
# One GPU session, end to end: generation throughput of the default model (bf16), then the
# training pipeline on the real data — two CoT-SFT variants side by side, dev evaluation of
# each, hard prompts and GRPO from the better one, dev evaluation again. Each stage packs its
# adapter, log and reports into $OUT as soon as it ends, so a run cut short still returns them.
#
#   OUT=/tmp/out RATIONANOMALY_DATA_DIR=../shared/data bash bench/gpu_run.sh
#
# Inputs: the default model prepared under $RATIONANOMALY_MODEL_CACHE (or its GGUF installed),
# the train/dev template files under $RATIONANOMALY_DATA_DIR, and a rationales file
# ($RATIONALES, from `rationales draft --hdfs-windows 40`). Knobs below (env) default to one
# H100/H200; a CPU dry run sets them tiny. GPU processes run two at a time: a 135M model is
# launch-bound on a GPU, so two trainers share it at little cost to each.
set -uo pipefail

PY=${PY:-python3}
OUT=${OUT:?set OUT to a folder for the results}
WORK=${WORK:-/tmp/ra-gpu}
RATIONALES=${RATIONALES:?set RATIONALES to a drafts jsonl}
DEADLINE_S=${DEADLINE_S:-540}          # the whole script, from its start
SFT_MIN=${SFT_MIN:-2.5}                   # per SFT variant (they run at the same time)
SFT_STEPS=${SFT_STEPS:-160}
SFT_BATCH=${SFT_BATCH:-64}
GRPO_STEPS=${GRPO_STEPS:-100}
GRPO_GENS=${GRPO_GENS:-8}
GRPO_PROMPTS=${GRPO_PROMPTS:-8}
GRPO_LR_A=${GRPO_LR_A:-1e-5}
GRPO_LR_B=${GRPO_LR_B:-3e-6}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-90}    # left after GRPO for its evaluation and packing
GRPO_OPTS=${GRPO_OPTS:-}                # more `grpo` options for both runs (--no-bf16, say)
START_ADAPTER=${START_ADAPTER:-}        # set: skip throughput and SFT, run GRPO from this adapter
EVAL_BATCH=${EVAL_BATCH:-256}
HARD_LIMIT=${HARD_LIMIT:-600}           # prompts scored for GRPO's hard set
EVAL_LIMIT=${EVAL_LIMIT:-}              # items per dev file; empty for all
CALIBRATE_NORMAL=${CALIBRATE_NORMAL:-300}  # normal train templates scored per dataset for the threshold
CALIBRATE_ABNORMAL=${CALIBRATE_ABNORMAL:-} # abnormal ones; empty for all
BENCH_BATCHES=${BENCH_BATCHES:-1,16,128}
BENCH_TEMPLATES=${BENCH_TEMPLATES:-512}

T="$PY -m rationanomaly.training.cli"
DEV="$RATIONANOMALY_DATA_DIR/templates/bgl_dev.jsonl $RATIONANOMALY_DATA_DIR/templates/spirit_dev.jsonl"
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
stamp() { echo "[$(date -u +%T) +${SECONDS}s] $*"; }
left() { echo $((DEADLINE_S - SECONDS)); }

pack() {  # pack STAGE: its adapter (not checkpoints), log and reports → $OUT/STAGE.tgz
  local stage=$1
  tar czf "$OUT/$stage.tgz" -C "$WORK" --exclude='checkpoint-*' "$stage" && stamp "packed $stage ($(du -h "$OUT/$stage.tgz" | cut -f1))"
}

evaluate() {  # evaluate STAGE ADAPTER: dev templates, no baselines (they are the same on every device)
  local stage=$1 adapter=$2
  $T eval $DEV --adapter "$adapter" --decision generate --baselines '' --batch-size "$EVAL_BATCH" \
    ${EVAL_LIMIT:+--limit $EVAL_LIMIT} --label "$stage" --report "$WORK/$stage/eval/report.json" >"$WORK/$stage/eval.log" 2>&1
  stamp "eval $stage: $(tail -n 4 "$WORK/$stage/eval.log" | grep -m1 '^precision' || echo failed)"
  # The rank decision: threshold from the train splits, then the same dev files.
  $T calibrate --adapter "$adapter" --batch-size "$EVAL_BATCH" --normal-per-dataset "$CALIBRATE_NORMAL" \
    ${CALIBRATE_ABNORMAL:+--abnormal-per-dataset $CALIBRATE_ABNORMAL} >"$WORK/$stage/calibrate.log" 2>&1
  $T eval $DEV --adapter "$adapter" --decision rank --baselines '' --batch-size "$EVAL_BATCH" \
    ${EVAL_LIMIT:+--limit $EVAL_LIMIT} --label "$stage-rank" --report "$WORK/$stage/eval_rank/report.json" >"$WORK/$stage/eval_rank.log" 2>&1
  stamp "eval $stage rank ($(tail -n 1 "$WORK/$stage/calibrate.log")): $(tail -n 4 "$WORK/$stage/eval_rank.log" | grep -m1 '^precision' || echo failed)"
}

sft() {  # sft STAGE [extra options]
  local stage=$1; shift
  mkdir -p "$WORK/$stage"
  $T sft --rationales "$RATIONALES" --hdfs-windows 0 --output-dir "$WORK/$stage" --max-steps "$SFT_STEPS" \
    --batch-size "$SFT_BATCH" --warmup-steps 10 --save-steps 1000 --time-budget-min "$SFT_MIN" "$@" \
    >"$WORK/$stage/train.log" 2>&1
  stamp "sft $stage exit $?: $(grep -o "'train_loss': '[0-9.]*'" "$WORK/$stage/train.log" | tail -1)"
  evaluate "$stage" "$WORK/$stage/final"
  pack "$stage"
}

grpo() {  # grpo STAGE ADAPTER HARD MINUTES [extra options]
  local stage=$1 adapter=$2 hard=$3 minutes=$4; shift 4
  mkdir -p "$WORK/$stage"
  $T grpo --adapter "$adapter" --rationales "$hard" --abnormal-share 0.01 --output-dir "$WORK/$stage" \
    --max-steps "$GRPO_STEPS" --num-generations "$GRPO_GENS" --prompts-per-step "$GRPO_PROMPTS" \
    --false-positive -1.0 --time-budget-min "$minutes" "$@" >"$WORK/$stage/train.log" 2>&1
  stamp "grpo $stage exit $?"
  evaluate "$stage" "$WORK/$stage/final"
  pack "$stage"
}

calc() { $PY -c "print($1)"; }  # no bc on a bare image
f1_of() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['f1'])" "$1" 2>/dev/null || echo -1; }

stamp "start: $($PY -c 'import torch, transformers, trl, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")')"
$PY -c 'from rationanomaly.model.loading import prepare_default_model; print(prepare_default_model(install=False))' || exit 1

if [ -n "${START_ADAPTER:-}" ]; then
  # Continue a given SFT adapter (the shipped default, say) instead of training SFT here: it is
  # evaluated on this device as GRPO's baseline while the hard prompts are scored.
  mkdir -p "$WORK/start" && rm -rf "$WORK/start/final" && cp -r "$START_ADAPTER" "$WORK/start/final"
  (evaluate start "$WORK/start/final"; pack start) & baseline=$!
  best=start
else
  stamp "generation throughput (default model, no adapter, greedy, 48 new tokens)"
  mkdir -p "$WORK/bench"
  timeout 120 $PY bench/model_throughput.py --only transformers --device auto --batch-sizes "$BENCH_BATCHES" \
    --templates "$BENCH_TEMPLATES" --max-new-tokens 48 | tee "$WORK/bench/generate.txt"

  stamp "SFT: two LoRA variants at once, ${SFT_MIN} min each"
  # `wait` with no pids would also wait for the log's tee (a process substitution).
  sft sft_attn --lora-targets q_proj,k_proj,v_proj,o_proj --learning-rate 5e-4 & a=$!
  sft sft_all --lora-targets all-linear --learning-rate 5e-4 & b=$!
  wait $a $b

  best=sft_attn
  if [ "$(calc "int($(f1_of "$WORK/sft_all/eval/report.json") > $(f1_of "$WORK/sft_attn/eval/report.json"))")" = 1 ]; then best=sft_all; fi
  stamp "best SFT by dev F1: $best"
fi

$T hard-prompts --adapter "$WORK/$best/final" --out "$WORK/hard.jsonl" --keep 256 --limit "$HARD_LIMIT" --batch-size 64 >"$WORK/hard.log" 2>&1
stamp "hard prompts: $(tail -n 1 "$WORK/hard.log")"

# What is left goes to two GRPO learning rates at once, less EVAL_RESERVE_S for their
# evaluation and packing.
minutes=$(calc "round(($(left) - $EVAL_RESERVE_S) / 60, 2)")
stamp "GRPO: two learning rates at once, $minutes min each"
if [ "$(calc "int($minutes > 0.3)")" = 1 ]; then
  grpo "grpo_lr$GRPO_LR_A" "$WORK/$best/final" "$WORK/hard.jsonl" "$minutes" --learning-rate "$GRPO_LR_A" $GRPO_OPTS & a=$!
  grpo "grpo_lr$GRPO_LR_B" "$WORK/$best/final" "$WORK/hard.jsonl" "$minutes" --learning-rate "$GRPO_LR_B" $GRPO_OPTS & b=$!
  wait $a $b
fi
[ -n "${baseline:-}" ] && wait "$baseline"
mkdir -p "$WORK/bench" && cp "$WORK/hard.log" "$WORK/bench/" 2>/dev/null
pack bench
stamp "done"
