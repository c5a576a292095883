#!/usr/bin/env bash
# Reproduce the shipped default model af-mini end to end on a CPU:
#   1. build the small corpus (Debian packages + synthesis)        audioflamingo data build-corpus
#   2. clap -> pretrain -> sft -> chat                              audioflamingo train -c configs/train/af-mini-*.yaml
#   3. copy the result into audioflamingo/assets/af-mini            (what load_model() and `ask` default to)
# Usage: scripts/train_af_mini.sh [CORPUS_DIR] [RUN_DIR]     (defaults: data/corpus-small, runs/af-mini)
# Extra overrides for every stage can be given in $TRAIN_ARGS, e.g. TRAIN_ARGS="--progress=false".
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-data/corpus-small}
RUN=${2:-runs/af-mini}
PY=${PYTHON:-python}
AF="$PY -m audioflamingo"

if [ ! -f "$CORPUS/train.jsonl" ]; then
  $AF data build-corpus --plan small --out "$CORPUS"
fi

common="--data.train=[$CORPUS/train.jsonl] --data.val=[$CORPUS/val.jsonl] --encoder_cache=$RUN/encoder_cache.pt ${TRAIN_ARGS:-}"
start=$(date +%s)
$AF train -c configs/train/af-mini-clap.yaml     $common --tokenizer_from=[$CORPUS/train.jsonl] --out_dir=$RUN/clap ${INIT_ENCODER:+--init_encoder=$INIT_ENCODER}
$AF train -c configs/train/af-mini-pretrain.yaml $common --model=$RUN/clap/model     --out_dir=$RUN/pretrain
$AF train -c configs/train/af-mini-sft.yaml      $common --model=$RUN/pretrain/model --out_dir=$RUN/sft
$AF train -c configs/train/af-mini-chat.yaml     $common --model=$RUN/sft/model      --out_dir=$RUN/chat
echo "training took $(( ($(date +%s) - start) / 60 )) min" | tee "$RUN/training_time.txt"

rm -rf audioflamingo/assets/af-mini
mkdir -p audioflamingo/assets
cp -r "$RUN/chat/model" audioflamingo/assets/af-mini
echo "af-mini written to audioflamingo/assets/af-mini"
