#!/usr/bin/env bash
# tools/update_help.sh [BINARY]: writes the `--help` of every command of the shipped bert-dist
# into Tests/EndToEndTests/Help/ (80 columns), the texts HelpTests compares the binary with.
# Run it after changing an option or a command's text, then update docs/commands.md (HelpTests
# also checks that it names every option). BINARY: default .build/debug/bert-dist.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-$repo/.build/debug/bert-dist}"
folder="$repo/Tests/EndToEndTests/Help"
mkdir -p "$folder"
rm -f "$folder"/*.txt
help() {  # command words...: the help of `bert-dist WORDS`, into WORDS joined by '-'.txt
    local name="bert-dist${*:+-}$(IFS=-; echo "$*")"
    COLUMNS=80 "$binary" "$@" --help > "$folder/$name.txt"
}
help
for command in train eval predict merge bench tokenize data; do help "$command"; done
help data ag-news
ls "$folder"
