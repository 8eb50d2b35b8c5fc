#!/usr/bin/env bash
# Train the models configs/sample.yaml uses, offline, from the CC text sample in
# $REFINE_TEST_DATA/text (default ../shared/data/text), into $REFINE_MODELS (default
# .cache/refine/models), with `refine train-lm` and `refine train-quality`:
#
#   sample-en.binary, sample-en.sp.model   order-3 KenLM + SentencePiece (the `perplexity` stage)
#   sample-quality.bin                     fastText bigram classifier (`quality_classifier`)
#   sample-eval.jsonl                      a stand-in evaluation set (`decontaminate`): 50
#                                          passages of that text as benchmark items
#   sample-domain/                         a 2-layer BERT created from a config and trained
#                                          here (`refine train-classifier --base tiny`):
#                                          `model_classifier`'s stand-in domain model
#
#   scripts/train_sample_models.sh [--force]
#
# Relative paths are relative to the current directory, as in the config (run it from the
# repository root; `make run` does, before the sample run). Cached: does nothing when they all
# exist, unless --force. Models are trained in a temporary folder beside them and renamed
# into place when all are done: an interrupted run leaves no half-written or mismatched
# model, and the next run trains the set again.
# Needs refine with its [models] and [classify] extras and lmplz/build_binary (scripts/build_kenlm.sh); PYTHON
# names the interpreter (default: python3). About 1-2 minutes on 2 cores.
#
# What the models mean: the sample holds only crawl text (697 English CC-MAIN-2019-30 documents),
# no Wikipedia-like reference. Each document is split into its prose lines (12+ words, ending a
# sentence) and its other lines (titles, dates, menus, list items, captions). The language model
# is trained on the prose (low perplexity = reads like running prose of these pages); the
# classifier learns prose (__label__hq) vs the other lines (__label__cc). Stand-ins that let the
# whole pipeline run offline and exercise both stages, NOT quality models: for real filtering use
# models trained on reference text (cc_net's Wikipedia LMs, DCLM's classifier: the
# quality_classifier default).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
DATA="${REFINE_TEST_DATA:-../shared/data}"
OUT="${REFINE_MODELS:-.cache/refine/models}"
TEXT="$DATA/text/cc-main-2019-30-en.jsonl.gz"
FILES=(sample-en.binary sample-en.sp.model sample-quality.bin sample-eval.jsonl sample-domain)

case "$#:${1:-}" in
    0:) force=0 ;;
    1:--force) force=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
if [ "$force" = 0 ]; then
    missing=0
    for f in "${FILES[@]}"; do [ -s "$OUT/$f" ] || missing=1; done
    [ -s "$OUT/sample-domain/model.safetensors" ] || missing=1
    if [ "$missing" = 0 ]; then
        echo "train_sample_models: models already in $OUT (--force retrains)"
        exit 0
    fi
fi
if [ ! -f "$TEXT" ]; then
    echo "train_sample_models: $TEXT not found (set REFINE_TEST_DATA to the shared data folder)" >&2
    exit 1
fi

mkdir -p "$OUT"
work="$(mktemp -d "$OUT/.train-XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# prose lines vs the other lines of each document (refine.training.split_prose)
"$PYTHON" - "$TEXT" "$work" <<'EOF'
import json, sys
from refine.training import iter_documents, split_prose

prose, rest = split_prose(iter_documents([sys.argv[1]]))
for name, docs in (("prose", prose), ("rest", rest)):
    with open(f"{sys.argv[2]}/{name}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in docs)
print(f"train_sample_models: {len(prose)} prose and {len(rest)} other-line documents")
# a stand-in evaluation set for `decontaminate`: 25-word passages of 50 prose documents
with open(f"{sys.argv[2]}/sample-eval.jsonl", "w", encoding="utf-8") as f:
    items = [t.split()[:25] for t in prose if len(t.split()) >= 25][:50]
    f.writelines(
        json.dumps({"id": f"item-{i}", "question": " ".join(words)}) + "\n"
        for i, words in enumerate(items)
    )
EOF

"$PYTHON" -m refine.cli train-lm --text "$work/prose.jsonl" --order 3 --vocab-size 8000 \
    --out "$work/sample-en.binary" --sp-out "$work/sample-en.sp.model"
"$PYTHON" -m refine.cli train-quality --positive "$work/prose.jsonl" --negative "$work/rest.jsonl" \
    --out "$work/sample-quality.bin" --dim 16 --epoch 20 --lr 0.5 --bucket 100000 --threads 1

# prose documents vs documents of the other lines, labelled `prose` / `lists`: the stand-in
# "domains" that model_classifier labels and mix balances in configs/sample.yaml
"$PYTHON" - "$work" <<'EOF'
import json, sys
with open(f"{sys.argv[1]}/domains.jsonl", "w", encoding="utf-8") as out:
    for name, label in (("prose", "prose"), ("rest", "lists")):
        with open(f"{sys.argv[1]}/{name}.jsonl", encoding="utf-8") as f:
            out.writelines(
                json.dumps({"text": json.loads(line)["text"], "domain": label}) + "\n"
                for line in f
            )
EOF
"$PYTHON" -m refine.cli train-classifier --text "$work/domains.jsonl" --labels domain \
    --base tiny --out "$work/sample-domain" --epochs 3 --max-length 128 --threads 2 >/dev/null

# the old set goes first: an interruption between the renames leaves a file missing (retrained
# next time), never a language model beside another training's SentencePiece model
for f in "${FILES[@]}"; do rm -rf "${OUT:?}/$f"; done
for f in "${FILES[@]}"; do mv "$work/$f" "$OUT/$f"; done
echo "train_sample_models: ${FILES[*]} in $OUT ($(( $(date +%s) - start )) s)"
