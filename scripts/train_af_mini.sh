#!/usr/bin/env bash
# Reproduce the shipped default model af-mini end to end on a CPU:
#   1. build the standard corpus (Debian packages + synthesis)     audioflamingo data build-corpus
#   2. clap -> pretrain                                             audioflamingo train -c configs/train/af-mini-*.yaml
#   3. retrieval index of the train split, 8 nearest shots per row  audioflamingo index build / index icl
#   4. sft (with those shots) -> chat                               audioflamingo train -c configs/train/af-mini-*.yaml
#   5. copy the result into audioflamingo/assets/af-mini            (what load_model() and `ask` default to)
# Usage: scripts/train_af_mini.sh [CORPUS_DIR] [RUN_DIR]     (defaults: data/corpus-standard, runs/af-mini)
# Extra overrides for every stage can be given in $TRAIN_ARGS, e.g. TRAIN_ARGS="--progress=false", and the
# corpus builder's flags in $CORPUS_FLAGS (default: those of the shipped model's corpus, below; the weights
# shipped until 6 Dec 2026 used none: CORPUS_FLAGS=" " reproduces that corpus; those of 7 Dec 2026 all but
# --package 0ad-data).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-data/corpus-standard}
RUN=${2:-runs/af-mini}
PY=${PYTHON:-python}
AF="$PY -m audioflamingo"

if [ ! -f "$CORPUS/train.jsonl" ]; then
  $AF data build-corpus --plan standard --seed 0 ${CORPUS_FLAGS:---balance-label-sets --continuous-sweeps --varied-synthesis --package 0ad-data} --out "$CORPUS"
fi

common="--data.train=[$CORPUS/train.jsonl] --data.val=[$CORPUS/val.jsonl] --encoder_cache=$RUN/encoder_cache.pt ${TRAIN_ARGS:-}"
start=$(date +%s)
if [ -f "$RUN/clap/model/config.json" ] && [ -f "$RUN/encoder_cache_after_clap.pt" ]; then
  # a finished clap stage in RUN is kept: changes after it (window summaries, later stages) need not train it again
  echo "reusing the clap stage in $RUN/clap (delete it to train it again)"
else
  $AF train -c configs/train/af-mini-clap.yaml     $common --tokenizer_from=[$CORPUS/train.jsonl] --out_dir=$RUN/clap ${INIT_ENCODER:+--init_encoder=$INIT_ENCODER}
  cp "$RUN/encoder_cache.pt" "$RUN/encoder_cache_after_clap.pt"  # the clips CLAP saw (train + val): excluded from scoring
fi
# the preset's transform settings (window summaries, embedding input) apply from here on even to a clap stage trained
# before they changed: its zero-initialised, never trained summary projection is replaced (model/loading.py)
$AF train -c configs/train/af-mini-pretrain.yaml $common --model=$RUN/clap/model     --out_dir=$RUN/pretrain \
    "--model_overrides=$($PY -c 'import json; from audioflamingo.config import load_model_config, to_dict; t = to_dict(load_model_config("af-mini").transform); print(json.dumps({f"transform.{k}": v for k, v in t.items()}))')"
# the encoder is frozen after clap, so its CLAP embedding (and the encoder cache) serve every later stage
$AF index build "$CORPUS/train.jsonl" --out "$RUN/index-train" --model $RUN/clap/model --encoder-cache "$RUN/encoder_cache.pt"
$AF index icl "$CORPUS/train.jsonl" --index "$RUN/index-train" --out "$RUN/icl_train.jsonl" -k 8 --seed 0 \
    --model $RUN/clap/model --encoder-cache "$RUN/encoder_cache.pt"
$AF train -c configs/train/af-mini-sft.yaml      $common --data.train=[$RUN/icl_train.jsonl] --model=$RUN/pretrain/model --out_dir=$RUN/sft
$AF train -c configs/train/af-mini-chat.yaml     $common --model=$RUN/sft/model      --out_dir=$RUN/chat
echo "training took $(( ($(date +%s) - start) / 60 )) min" | tee "$RUN/training_time.txt"

dest=audioflamingo/assets/af-mini  # the model card (README.md) there is kept
mkdir -p "$dest"
rm -rf "$dest/tokenizer" "$dest/model.safetensors" "$dest/config.json" "$dest/clap_text_head.safetensors"
cp -r "$RUN/chat/model/." "$dest/"
cp "$RUN/clap/model/clap_text_head.safetensors" "$dest/"
echo "af-mini written to $dest"

# scores on the corpus test split (audio never seen in training), for the model card; captions also with MBR decoding
# (16 samples; alone and with the 8 nearest training captions at weight 0.3, chosen on val: model/mbr.py)
$PY scripts/eval_af_mini.py --model "$dest" --corpus "$CORPUS" --cache "$RUN/encoder_cache.pt" --out "$RUN/scores.json" --threads 1 --max-per-task 300 --rag 4 --pool-val 30 \
    --mbr 16 --mbr-knn-weight 0 0.3 --exclude-seen "$RUN/encoder_cache_after_clap.pt"
# few-shot learning of held-out labels (zero-shot vs random vs retrieved k-shot), for the model card
$AF eval -c configs/eval/fewshot-heldout.yaml --model "$dest" --out "$RUN/eval-fewshot" --plot "seeds=[0]" "data_root=$CORPUS"
