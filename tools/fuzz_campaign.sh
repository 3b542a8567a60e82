#!/usr/bin/env bash
# The out-of-suite fuzz campaign through the built binary (issue 17's method): FuzzTests writes
# the files of each case (BERT_DIST_FUZZ_DUMP) instead of loading them, then every case runs
# through bert-dist as a user would run it: predict and train on the damaged model folders, eval
# and train --resume on the damaged checkpoints, tokenize on the damaged tokenizer files, train
# on the damaged data files and with the damaged `--config` files. A run killed by a signal,
# printing a Swift runtime failure or a fatal error, or over 60 seconds counts as a crash or
# hang; any other failure must be one line starting with "error:"; no run may print a control
# character other than tab and line break.
#
#   tools/fuzz_campaign.sh [SCALE [BINARY]]     (after `swift build --build-tests`)
#
# SCALE multiplies FuzzTests' case counts (1: ~1,850 cases); BERT_DIST_FUZZ_SEED=N (default 1,
# the suite's cases) makes other cases. Prints one line per crash, hang or bad message, then the
# counts per target.
set -uo pipefail
cd "$(dirname "$0")/.."
scale=${1:-1}
binary=$(realpath "${2:-.build/debug/bert-dist}")
work=$(mktemp -d /tmp/fuzz-campaign-XXXXXX)
trap 'rm -rf "$work"' EXIT

BERT_DIST_FUZZ_DUMP="$work/cases" BERT_DIST_FUZZ_SCALE="$scale" swift test --skip-build --filter 'FuzzTests/' >"$work/dump.log" 2>&1
fixtures=Tests/FuzzTests/Fixtures
model="$work/model"
mkdir -p "$model" && cp -L "$fixtures"/tiny_model/* "$model/"
# A training file for the damaged models: AG News rows of the tiny vocabulary.
printf '"1","w5 w6","w7 w8"\n"2","w9 w10","w11"\n"3","w12","w13 w14"\n"4","w15","w16"\n' >"$work/train.csv"
printf 'text,label\nw5 w6,LABEL_0\nw7,LABEL_1\n' >"$work/eval.csv"

declare -A runs crashes badMessages rawOutput
run() {  # run TARGET COMMAND...: classify one run
    local target=$1; shift
    runs[$target]=$(( ${runs[$target]:-0} + 1 ))
    timeout -s KILL 60 "$@" >"$work/out" 2>"$work/err" </dev/null
    local status=$?
    if (( status == 137 )); then
        crashes[$target]=$(( ${crashes[$target]:-0} + 1 )); echo "HANG   $(cat "$case/case.txt")"
    elif (( status > 128 )) || grep -qE "Fatal error|runtime failure|Illegal instruction|Segmentation" "$work/err"; then
        crashes[$target]=$(( ${crashes[$target]:-0} + 1 )); echo "CRASH  $(head -c 300 "$case/case.txt") :: $(grep -m1 -E "Fatal|failure|error" "$work/err" | head -c 200)"
    elif (( status != 0 )) && ! { [[ $(grep -c . "$work/err") == 1 ]] && grep -q "^error: " "$work/err"; }; then
        badMessages[$target]=$(( ${badMessages[$target]:-0} + 1 )); echo "BADMSG $(head -c 200 "$case/case.txt") :: $(head -c 300 "$work/err" | tr '\n' '|')"
    elif grep -qaP "$raw_control" "$work/out" "$work/err"; then
        rawOutput[$target]=$(( ${rawOutput[$target]:-0} + 1 ))
        echo "RAW    $(head -c 200 "$case/case.txt") :: $(grep -m1 -haP "$raw_control" "$work/out" "$work/err" | head -c 200 | cat -v)"
    fi
}
# A control character other than tab and line break, printed as it is (a name from a damaged file
# that was not escaped): it can split a line or drive the terminal.
raw_control='[\x00-\x08\x0b-\x1f\x7f]'


common=(--max-steps 1 --batch-size 4 --threads 1 --cache-dir "$work/cache")
for case in "$work"/cases/*; do
    name=$(basename "$case")
    rm -rf "$work/output" "$work/cache"
    case $name in
        modelfolderpredict-*) run predict bash -c "printf 'w5 w6\nhello\n' | '$binary' predict --checkpoint '$case/model' --threads 1" ;;
        modelfoldertrain-*) run train "$binary" train --model "$case/model" --train "$work/train.csv" --output "$work/output" "${common[@]}" ;;
        checkpoint-*) run eval "$binary" eval --checkpoint "$case/checkpoint-6" --data "$work/eval.csv" --text-column text --threads 1 --cache-dir "$work/cache" ;;
        checkpointresume-*)
            mkdir -p "$work/output" && cp -r "$case/checkpoint-6" "$work/output/"
            run resume "$binary" train --model "$model" --train "$work/train.csv" --output "$work/output" --resume --max-steps 8 --batch-size 4 --threads 1 --cache-dir "$work/cache" ;;
        tokenizer*) run tokenize bash -c "printf 'w5 the w6s, running!\n' | '$binary' tokenize --model '$case/model'" ;;
        AGNewsCSV-*) run data "$binary" train --model "$model" --train "$case/data/ag_news.csv" --output "$work/output" "${common[@]}" ;;
        headerCSV-*) run data "$binary" train --model "$model" --train "$case/data/train.csv" --text-pair-column text_pair --output "$work/output" --ignore-mismatched-sizes "${common[@]}" ;;
        TSV-*) run data "$binary" train --model "$model" --train "$case/data/train.tsv" --output "$work/output" --ignore-mismatched-sizes "${common[@]}" ;;
        JSONLines-*) run data "$binary" train --model "$model" --train "$case/data/train.jsonl" --text-pair-column text_pair --output "$work/output" --ignore-mismatched-sizes "${common[@]}" ;;
        trainconfig-*)  # from a folder of its own: the file names the model, data and output folders
            mkdir -p "$work/scratch" && run config bash -c "cd '$work/scratch' && '$binary' train --config '$case/config/train.json' --threads 1" ;;
        *) ;;  # token caches: no command opens one by name
    esac
done
for target in "${!runs[@]}"; do
    echo "$target: ${runs[$target]} runs, ${crashes[$target]:-0} crashed or hung, ${badMessages[$target]:-0} bad messages, ${rawOutput[$target]:-0} with raw control characters"
done
