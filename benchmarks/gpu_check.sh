#!/usr/bin/env bash
# One GPU throughput check of the rater: the released code's loop (batch size 1, full logits, fp16 / bf16) against
# our batched rater on Gemma-3-270M, on a lent H100/H200, and (2+ GPUs) tensor-parallel rating. Run ONCE from the repo
# root; it ends within ~5 minutes (~9 with the tensor-parallel case).
#
# It needs the machine's own python3 with CUDA torch and transformers (the repo's .venv is CPU-only and does not
# travel). Nothing is installed: if transformers is missing it says so and stops.
#
# The model: MODEL_DIR (relative to the repo root, default gpu_models/gemma3), a folder made here with
#   .venv/bin/python benchmarks/export_bf16.py --no-weights /tmp/models/gemma3 gpu_models/gemma3
# (config + tokenizer + model.json, ~34 MB: the device tool moves at most 64 MiB of working tree per call, so the
# 0.54 GB bf16 weights cannot travel). Without weights the benchmark builds the architecture with seeded random
# weights: the same shapes and FLOPs, so the same throughput; the agreement numbers then compare code paths on a
# random model. A folder that does hold weights (export_bf16.py without --no-weights) is loaded as it is.
#
# Output: $OUT/rating_gpu.json (written after every variant, so a cut-off run still leaves numbers),
# $OUT/rating_gpu.log (the whole log), $OUT/env.txt.
#
# Tensor parallel (on a machine with 2 or more GPUs; TP_GPUS, default all it has): benchmarks/tp_check.py rates
# TP_ROWS rows (3000) with a random-weight Llama of LLaMA-2-70B's layer shape (TP_LAYERS layers, 4) and MODEL_DIR's
# tokenizer, on one GPU and then tensor-parallel over TP_GPUS processes, as a rating job does; within TP_LIMIT_S
# (240 s). Output: $OUT/tp_check.json (both modes' tokens/s, the speed-up and scaling efficiency, the largest logit
# difference, the top-20 % overlap), $OUT/tp_check.log. CASES (rating,tp) picks which of the two checks run.
#
# vLLM (CASES has vllm, and PYTHON imports vllm; the check installs nothing): the vLLM engine as the pipeline runs
# it (selectit.engines.vllm, SELECTIT_VLLM_PYTHON=$PYTHON, random weights via SELECTIT_VLLM_LOAD_FORMAT=dummy where
# MODEL_DIR has none): rating (rating_throughput.py, ours:ours against vllm:ours on ROWS x REPEAT rows, within
# VLLM_LIMIT_S, 150) and generation (generation_engines.py: VLLM_QUESTIONS GSM 8-shot prompts of
# data/default/eval, 256 new tokens, HF static batches of 32 against vLLM, bf16). Output: $OUT/vllm_rating.json,
# $OUT/vllm_generation.json and their logs.
#
# Knobs (environment): MODEL_DIR, PYTHON (python3), DEVICE (cuda; cpu for a dry run here), ROWS (260 samples),
# REPEAT (20: the samples tiled 20x so our rater gets ~26k rows x 5 prompts of work), RELEASED_ROWS (260: the
# released loop rates 260 samples x 5 prompts one by one), TOKEN_BUDGET (65536), MAX_ROWS (1024),
# VARIANTS, LIMIT_S (270: the benchmark is stopped after this many seconds), MATMUL_SIZE (8192: the peak
# FLOP/s matmul), OUT ($OUT or ./gpu_out).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
MODEL_DIR=${MODEL_DIR:-gpu_models/gemma3}
DEVICE=${DEVICE:-cuda}
ROWS=${ROWS:-260}
REPEAT=${REPEAT:-20}
RELEASED_ROWS=${RELEASED_ROWS:-260}
TOKEN_BUDGET=${TOKEN_BUDGET:-65536}
MAX_ROWS=${MAX_ROWS:-1024}
LIMIT_S=${LIMIT_S:-270}
MATMUL_SIZE=${MATMUL_SIZE:-8192}
CASES=${CASES:-rating,tp,vllm}
VLLM_LIMIT_S=${VLLM_LIMIT_S:-150}
VLLM_QUESTIONS=${VLLM_QUESTIONS:-64}
TP_ROWS=${TP_ROWS:-3000}
TP_LAYERS=${TP_LAYERS:-4}
TP_LIMIT_S=${TP_LIMIT_S:-240}
VARIANTS=${VARIANTS:-released:own,released:ours,ours:ours,ours-compile:ours,ours-compile:ours@tb=131072+rows=2048,ours-plain:ours@tb=131072+rows=2048+compile=1}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true

{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | head -3
  echo "python: $(command -v "$PY")"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  "$PY" -c "import transformers, tokenizers; print('transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)" \
    || echo "transformers is missing: nothing installed; this check cannot run here"
  "$PY" -c "import pandas, pyarrow, numpy, tqdm; print('pandas', pandas.__version__, 'pyarrow', pyarrow.__version__, 'numpy', numpy.__version__)" \
    || echo "a dependency of selectit (pandas, pyarrow, numpy, tqdm) is missing"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "no triton: the ours-compile variant will fall back to eager"
} 2>&1 | tee "$OUT/env.txt"

if ! "$PY" -c "import transformers" 2>/dev/null; then
  exit 3
fi
if [ ! -f "$MODEL_DIR/config.json" ] || [ ! -f "$MODEL_DIR/model.json" ]; then
  echo "MODEL_DIR=$MODEL_DIR is not a prepared model folder (config.json + model.json); make it with" \
       "benchmarks/export_bf16.py --no-weights /tmp/models/gemma3 $MODEL_DIR" | tee -a "$OUT/env.txt"
  exit 4
fi
du -sh "$MODEL_DIR" | tee -a "$OUT/env.txt"

set -o pipefail
rc=0
if [[ ",$CASES," == *,rating,* ]]; then
  timeout --signal=INT --kill-after=20 "$LIMIT_S" "$PY" benchmarks/rating_throughput.py \
    --device "$DEVICE" --model-dir "$MODEL_DIR" --rows "$ROWS" --repeat "$REPEAT" --released-rows "$RELEASED_ROWS" \
    --token-budget "$TOKEN_BUDGET" --max-rows "$MAX_ROWS" --max-length 1024 --warmup-rows 4 \
    --matmul-size "$MATMUL_SIZE" --matmul-reps 10 --variants "$VARIANTS" --out "$OUT/rating_gpu.json" 2>&1 \
    | grep -v -E '^W[0-9]{4} |torch._dynamo hit config' | tee "$OUT/rating_gpu.log"
  rc=$?
  echo "benchmark exit status: $rc (124/130: stopped at LIMIT_S=${LIMIT_S}s; $OUT/rating_gpu.json holds the variants done)"
fi
TP_GPUS=${TP_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
if [[ ",$CASES," == *,tp,* ]]; then
  if [ "$TP_GPUS" -ge 2 ]; then
    timeout --signal=INT --kill-after=20 "$TP_LIMIT_S" "$PY" benchmarks/tp_check.py --device "$DEVICE" \
      --tokenizer-dir "$MODEL_DIR" --gpus "$TP_GPUS" --rows "$TP_ROWS" --layers "$TP_LAYERS" \
      --out "$OUT/tp_check.json" 2>&1 | grep -v -E '^W[0-9]{4} ' | tee "$OUT/tp_check.log"
    tp_rc=$?
    echo "tensor-parallel check exit status: $tp_rc (124/130: stopped at TP_LIMIT_S=${TP_LIMIT_S}s)"
    [ "$rc" -ne 0 ] || rc=$tp_rc
  else
    echo "tensor-parallel check skipped: $TP_GPUS GPU(s) here, it needs 2 or more (TP_GPUS)" | tee "$OUT/tp_check.log"
  fi
fi
if [[ ",$CASES," == *,vllm,* ]]; then
  if "$PY" -c "import vllm" 2>/dev/null; then
    export SELECTIT_VLLM_PYTHON=$(command -v "$PY")
    [ -f "$MODEL_DIR/model.safetensors" ] || export SELECTIT_VLLM_LOAD_FORMAT=dummy
    timeout --signal=INT --kill-after=20 "$VLLM_LIMIT_S" "$PY" benchmarks/rating_throughput.py \
      --device "$DEVICE" --model-dir "$MODEL_DIR" --rows "$ROWS" --repeat "$REPEAT" --released-rows 0 \
      --token-budget "$TOKEN_BUDGET" --max-rows "$MAX_ROWS" --max-length 1024 --warmup-rows 4 \
      --matmul-size "$MATMUL_SIZE" --matmul-reps 10 --variants ours:ours,vllm:ours --out "$OUT/vllm_rating.json" \
      2>&1 | grep -v -E '^W[0-9]{4} ' | tee "$OUT/vllm_rating.log"
    echo "vLLM rating exit status: $?"
    timeout --signal=INT --kill-after=20 "$VLLM_LIMIT_S" "$PY" benchmarks/generation_engines.py \
      --model-dir "$MODEL_DIR" --data data/default/eval --questions "$VLLM_QUESTIONS" --batch-size 32 \
      --dtype bf16 --out "$OUT/vllm_generation.json" 2>&1 | tee "$OUT/vllm_generation.log"
    echo "vLLM generation exit status: $?"
  else
    echo "vLLM cases skipped: $PY cannot import vllm (nothing is installed here)" | tee "$OUT/vllm_rating.log"
  fi
fi
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv 2>/dev/null | tail -1
exit $rc
