#!/bin/sh
# 00-unit.t - run every GTest unit binary (t/unit/*.c) as a TAP subtest.
: "${RR_BUILD:?run through make check}"
n=0
for bin in "$RR_BUILD"/t/unit/*; do
    [ -x "$bin" ] || continue
    n=$((n + 1))
done
if [ "$n" = 0 ]; then
    echo "1..0 # SKIP no unit tests built"
    exit 0
fi
echo "1..$n"
i=0
for bin in "$RR_BUILD"/t/unit/*; do
    [ -x "$bin" ] || continue
    i=$((i + 1))
    name=$(basename "$bin")
    echo "# Subtest: $name"
    if "$bin" --tap 2>&1 | sed 's/^/    /'; then :; fi
    # sed hides the exit status: run the verdict from a second status file
    if "$bin" --tap >/dev/null 2>&1; then
        echo "ok $i - $name"
    else
        echo "not ok $i - $name"
    fi
done
