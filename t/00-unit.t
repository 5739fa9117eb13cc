#!/bin/sh
# 00-unit.t - run every GTest unit binary (t/unit/*.c) as a TAP subtest.
: "${RR_BUILD:?run through make check}"
bins=""
for bin in "$RR_BUILD"/t/unit/*; do
    [ -x "$bin" ] && [ -f "$bin" ] && bins="$bins $bin"
done
if [ -z "$bins" ]; then
    echo "1..0 # SKIP no unit tests built"
    exit 0
fi
echo "1..$(echo $bins | wc -w)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
i=0
for bin in $bins; do
    i=$((i + 1))
    name=$(basename "$bin")
    echo "# Subtest: $name"
    if "$bin" --tap >"$out" 2>&1; then status="ok"; else status="not ok"; fi
    sed 's/^/    /' "$out"
    echo "$status $i - $name"
done
