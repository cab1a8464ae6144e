#!/usr/bin/env bash
# The GPU figures the issues ask for, in one run on a lent GPU machine, most important first:
#   train step at the issue's shape (B=8 192x256, width 16) against PyTorch, float32 and bfloat16 (PyTorch AMP),
#   and at 512x512, batch 32, width 64 in bfloat16 (the MFU shape); inference against PyTorch; the confusion matrix
#   against numpy (target >= 20x); scaling with model FLOPs utilisation at the MFU shape (target >= 40%); last, the
#   main job end to end (build, train, evaluate, pictures) on the default config, shortened to MAIN_STEPS (650).
# CamVid does not travel (122 MB against the device tool's 64 MiB), so configs/camvid_gpu.py is not run here.
#
# Here, once:  bash tools/gpu_wheels.sh          (the packages the GPU machine lacks, into .whl/)
# There:       bash tools/gpu_checks.sh "$OUT"   (through the device tool, carrying .whl)
# It writes OUT/results.jsonl (one line per benchmark: name, exit status, seconds, its --json object) and
# OUT/log.txt (everything the benchmarks printed). Each benchmark is cut off after LIMIT seconds (default 100), the
# main job after LIMIT_MAIN (default 180); its metrics.jsonl and curves.png come back in OUT/main/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash tools/gpu_checks.sh OUTDIR}
python=${PYTHON:-python3}
mkdir -p "$out"
log="$out/log.txt" results="$out/results.jsonl"
if ! "$python" -c "import grain, tensorflow_datasets, ml_collections" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed: run tools/gpu_wheels.sh here and carry .whl" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# JAX would otherwise take 75% of the GPU's memory at start and leave the PyTorch peers the rest.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$python" -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__)"; } \
  >> "$log" 2>&1
# Every benchmark imports these: fail here, once, with the versions, rather than six times after 100 s each.
"$python" -c "import flax, flax.nnx, optax, orbax.checkpoint as o, numpy, grain
print('flax', flax.__version__, '| optax', optax.__version__, '| orbax', o.__version__, '| numpy', numpy.__version__)" \
  >> "$log" 2>&1 || { tail -n 5 "$log"; echo "the packages above do not import: see $log" >&2; exit 1; }

bench() {   # NAME SUB-COMMAND [ARGS...]
  local name=$1 command=$2 start=$SECONDS status
  shift 2
  echo "== $name: tools/benchmark.py $command --json $*" | tee -a "$log"
  timeout "${LIMIT:-100}" "$python" tools/benchmark.py "$command" --json "$@" > "$out/$name.json" 2>> "$log"
  status=$?
  "$python" - "$name" "$status" "$((SECONDS - start))" "$out/$name.json" >> "$results" <<'PY'
import json, sys
name, status, seconds, path = sys.argv[1:]
lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
print(json.dumps({"name": name, "exit": int(status), "seconds": int(seconds),
                  "result": json.loads(lines[-1]) if lines else None}))
PY
  rm -f "$out/$name.json"
  tail -n 1 "$results"
}

bench train_float32 train
bench train_bfloat16 train --dtype bfloat16
bench train_bfloat16_512 train --dtype bfloat16 --batch 32 --height 512 --width 512 --base_width 64 --steps 3 \
  --repeats 3
bench predict predict
bench eval eval
bench mfu_512 scaling --height 512 --width 512 --base_width 64 --dtype bfloat16 --global_batch 32 \
  --per_device_batch 32

# The whole path on a GPU: the dataset built there, training, evaluation, checkpoints, curves (the checkpoints stay in
# /tmp: they would not travel back).
start=$SECONDS
echo "== main: configs/default.py, ${MAIN_STEPS:=650} steps" | tee -a "$log"
timeout "${LIMIT_MAIN:-180}" "$python" -m streetseg_jax.main --config configs/default.py --workdir /tmp/gpu_main \
  --config.data_dir=/tmp/gpu_tfds --config.num_train_steps="$MAIN_STEPS" \
  --config.eval_every_steps="$MAIN_STEPS" --config.checkpoint_every_steps="$MAIN_STEPS" >> "$log" 2>&1
status=$?
mkdir -p "$out/main" && cp /tmp/gpu_main/metrics.jsonl /tmp/gpu_main/curves.png "$out/main/" 2>/dev/null
"$python" - "$status" "$((SECONDS - start))" /tmp/gpu_main/metrics.jsonl >> "$results" <<'PY'
import json, os, sys
status, seconds, path = sys.argv[1:]
rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
evals = [r for r in rows if "eval/miou" in r]
speeds = sorted(r["train/images_per_second"] for r in rows if "train/images_per_second" in r)
print(json.dumps({"name": "main_default", "exit": int(status), "seconds": int(seconds), "result": {
    "steps": max((r["step"] for r in rows if "step" in r), default=0),
    "eval_miou": evals[-1]["eval/miou"] if evals else None,
    "median_train_images_per_second": speeds[len(speeds) // 2] if speeds else None}}))
PY
tail -n 1 "$results"
