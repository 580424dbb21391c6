#!/usr/bin/env bash
# Builds Ollama (CPU only) from the Go module proxy for the tests against a real model server, once: the binary is
# cached under the user's cache directory, keyed by version, and reused. Prints the binary's path on stdout.
#
# The module zip lacks llama.cpp's vendored headers: Debian's nlohmann-json3-dev and libstb-dev supply JSON and
# stb_image, and internal/realollama/miniaudio/miniaudio.h stands in for miniaudio (audio input only).
# About 6 minutes on 2 idle cores. A lock keeps two builds from running at once; the second waits and reuses.
set -euo pipefail

version=v0.17.4
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/deepersensor/ollama-$version"
bin="$dir/ollama"

for header in /usr/include/nlohmann/json.hpp /usr/include/stb/stb_image.h; do
  if [ ! -f "$header" ]; then
    echo "ollama-build: $header is missing: apt-get install nlohmann-json3-dev libstb-dev" >&2
    exit 1
  fi
done

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

if [ ! -x "$bin" ]; then
  echo "ollama-build: building Ollama $version into $bin (several minutes)" >&2
  tmp="$(mktemp -d "$dir/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  start=$SECONDS
  GOBIN="$tmp" CGO_ENABLED=1 GOFLAGS=-mod=mod \
    CGO_CPPFLAGS="-I$repo/internal/realollama" CGO_CFLAGS=-O2 CGO_CXXFLAGS=-O2 \
    nice -n 10 go install "github.com/ollama/ollama@$version"
  mv "$tmp/ollama" "$bin"
  echo "ollama-build: built in $((SECONDS - start)) s" >&2
fi

echo "$bin"
