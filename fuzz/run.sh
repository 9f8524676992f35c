#!/bin/sh
# fuzz/run.sh TARGET [RUNS] - run a libFuzzer target (after `make fuzz`) on a
# copy of its corpus; new inputs are merged back into fuzz/corpus/TARGET,
# crashes land in fuzz/crashes/TARGET (commit them: make test replays them).
set -eu
cd "$(dirname "$0")"
t=$1
runs=${2:-10000000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp corpus/"$t"/* "$work"/
./bin/fuzz_"$t" -runs="$runs" -max_len=131072 -timeout=20 -rss_limit_mb=3000 -print_final_stats=1 \
    -artifact_prefix=crashes/"$t"/ "$work"
mkdir -p "$work.min"
./bin/fuzz_"$t" -merge=1 -max_len=131072 "$work.min" corpus/"$t" "$work" >/dev/null 2>&1
rm -f corpus/"$t"/*
cp "$work.min"/* corpus/"$t"/
rm -rf "$work.min"
