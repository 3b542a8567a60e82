#!/bin/sh
# Regenerates the committed protoc-c output in Sources/CProto from the schemas in this folder.
# Needs protoc-c (Debian: protobuf-c-compiler; the committed files came from protobuf-c 1.4.1).
# Run from anywhere: proto/generate.sh
set -eu
proto_directory=$(cd "$(dirname "$0")" && pwd)
cproto_directory="$proto_directory/../Sources/CProto"
output_directory=$(mktemp -d)
trap 'rm -rf "$output_directory"' EXIT

cd "$proto_directory"
protoc-c --c_out="$output_directory" trainer_state.proto tensorboard_event.proto

mkdir -p "$cproto_directory/include"
for name in trainer_state tensorboard_event; do
    cp "$output_directory/$name.pb-c.c" "$cproto_directory/$name.pb-c.c"
    cp "$output_directory/$name.pb-c.h" "$cproto_directory/include/$name.pb-c.h"
done
echo "regenerated $(ls "$output_directory" | tr '\n' ' ')with $(protoc-c --version | head -n 1)"
