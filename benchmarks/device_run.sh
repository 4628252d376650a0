#!/usr/bin/env bash
# Paper-size benchmarks on one GPU machine (H100/H200, 16 cores), in one go; see reports/paper_scale.md.
#
#   bash benchmarks/device_run.sh prepare          # HERE, once (needs pip access): inputs the GPU machine lacks
#   bash benchmarks/device_run.sh run [speed] [cache] [scale]   # THERE, carrying .whl and runs/device_inputs
#
# prepare: wheels the GPU image does not hold (open_clip_torch, ftfy, wcwidth; sentence-transformers
#   6.2.0, the version this project is tested with, where the image has 6.0.1) into .whl/, and into
#   runs/device_inputs/ the shipped data the benchmarks read (Wiki1M prefix, Multi30k train captions,
#   STS-B dev: ~4 MB) and the MiniLM tokenizer files (the model package itself is too big to carry).
# run: installs the wheels into /tmp/site, then
#   speed  benchmarks/paper_speed.py at BERT-base size (~5-6 min, mostly torch.compile warm-up), with the
#          default recipe's step against sentence-transformers' trainer step (race_st.py's race at BERT-base)
#   cache  benchmarks/paper_cache_speed.py: ViT-L-14 (RANDOM weights) cache rows/s over 100k Wiki1M lines
#          and 4,096 JPEGs, num_workers 0 and default, against the bare forward (~2-3 min);
#          writes paper_cache_speed_<device>.md
#   scale  benchmarks/paper_scale.py at full scale (SCALE=1: 1M Wiki lines, 29k images; ~6-7 min at
#          today's ~4k rows/s cache, ~3 min once the cache reaches the 16.5k rows/s target)
#   and writes reports + logs to $OUT (at most 8 files). Each phase has its own time limit
#   (SPEED_LIMIT, CACHE_LIMIT, SCALE_LIMIT seconds), so a slow phase cannot swallow the other's results; when
#   both do not fit one 10-minute call, run `run speed` and `run scale` as two calls.
#   SPEED_ARGS / CACHE_ARGS / SCALE_ARGS append flags (argparse keeps the last value), PY picks the interpreter:
#   a CPU rehearsal of this very script is
#   PY=.venv/bin/python OUT=/tmp/o SITE=/tmp/s SPEED_ARGS="--size tiny --steps 1 --warmup 1 --compile none
#     --device cpu" CACHE_ARGS="--size tiny --device cpu" SCALE=0.001 SCALE_ARGS="--tiny-models --image-size 32x24" bash benchmarks/device_run.sh run
# benchmarks/cache_speed.py is left out: it times the CPU offline teacher (MiniLM + EfficientNet
#   weights packages), which the GPU machine lacks; paper_scale times the paper's ViT-L-14 cache.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
shift || true
INPUTS=runs/device_inputs
WHEELS="open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 sentence-transformers==6.2.0"
SHIPPED="wiki1m/wiki1m_for_simcse.prefix.txt flickr30k/multi30k/task2/image_splits/train_images.txt
  flickr30k/multi30k/task2/raw/train.1.en.gz flickr30k/multi30k/task2/raw/train.2.en.gz
  flickr30k/multi30k/task2/raw/train.3.en.gz flickr30k/multi30k/task2/raw/train.4.en.gz
  flickr30k/multi30k/task2/raw/train.5.en.gz senteval/STS/STSBenchmark/sts-dev.csv"

prepare() {
  local py=${PY:-python3} data tokenizer
  data=$("$py" -c 'from teacher_cache.corpora import resolve_data_dir; print(resolve_data_dir(None))') || exit 2
  tokenizer=$("$py" -c 'from kdmcse_base.offline_models import minilm_path; print(minilm_path())') || exit 2
  rm -rf "$INPUTS" && mkdir -p "$INPUTS/tokenizer" .whl
  for file in $SHIPPED; do
    mkdir -p "$INPUTS/data/$(dirname "$file")" && cp "$data/$file" "$INPUTS/data/$file" || exit 2
  done
  cp "$tokenizer"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$INPUTS/tokenizer/" || exit 2
  # shellcheck disable=SC2086
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS || exit 2
  du -sh .whl "$INPUTS"
  echo "carry: [\".whl\", \"$INPUTS\"]; command: bash benchmarks/device_run.sh run"
}

run() {
  local out=${OUT:-runs/device_out} phases=${*:-speed cache scale} work=${WORK:-/tmp/paper_scale} py=${PY:-python3}
  local site=${SITE:-/tmp/site}
  mkdir -p "$out"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "wheels missing: run 'bash benchmarks/device_run.sh prepare' here and carry .whl"; exit 2; }
  export PYTHONPATH="$site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
  { nvidia-smi; "$py" -c 'import torch, open_clip, sentence_transformers as st; print(torch.__version__, open_clip.__version__, st.__version__)'; } \
    > "$out/environment.txt" 2>&1
  for phase in $phases; do
    case $phase in
      speed)
        # shellcheck disable=SC2086
        timeout "${SPEED_LIMIT:-420}" "$py" benchmarks/paper_speed.py --size base --steps 20 \
          --tokenizer "$INPUTS/tokenizer" --data-dir "$INPUTS/data" --out "$out/paper_speed.md" ${SPEED_ARGS:-} \
          2>&1 | tee "$out/paper_speed.log" | grep -v -e "it/s]" -e "^Loading" ;;
      cache)
        # shellcheck disable=SC2086
        timeout "${CACHE_LIMIT:-300}" "$py" benchmarks/paper_cache_speed.py --size large \
          --source-data "$INPUTS/data" --out "$out/paper_cache_speed_{device}.md" ${CACHE_ARGS:-} \
          2>&1 | tail -40 ;;
      scale)
        rm -rf "$work"
        # shellcheck disable=SC2086
        timeout "${SCALE_LIMIT:-540}" "$py" benchmarks/paper_scale.py --work-dir "$work" --scale "${SCALE:-1}" \
          --source-data "$INPUTS/data" --tokenizer "$INPUTS/tokenizer" --out "$out/paper_scale.md" ${SCALE_ARGS:-} \
          2>&1 | tee "$out/paper_scale.log"
        cp "$work/paper_scale.json" "$out/" 2>/dev/null
        tail -c 200000 "$work/cache.log" > "$out/cache.log" 2>/dev/null ;;
      *) echo "unknown phase $phase (speed, cache, scale)"; exit 2 ;;
    esac
  done
}

case $MODE in
  prepare) prepare ;;
  run) run "$@" ;;
  *) echo "usage: $0 prepare | run [speed] [cache] [scale]"; exit 2 ;;
esac
