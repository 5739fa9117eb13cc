#!/usr/bin/env python3
# 97-fuzz.t - every libFuzzer target (fuzz/*.c) builds with clang and runs
# a few seconds from its seed corpus (which holds the inputs of every
# finding so far: each replays first) without a crash, a sanitizer
# report or a broken property. RR_FUZZ_TIME sets the seconds per target.
import glob
import os
import shutil
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, diag, done

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if shutil.which("clang") is None or not glob.glob(
        "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a"):
    rrtest.skip_all("clang with libFuzzer not installed (make deps)")
secs = int(os.environ.get("RR_FUZZ_TIME", "3"))
b = subprocess.run(["make", "-s", "-C", ROOT, "VARIANT=fuzz", "fuzzers"],
                   capture_output=True, text=True)
if not ok(b.returncode == 0, "the fuzz targets build"):
    diag(b.stdout[-3000:] + b.stderr[-3000:])
    done()
names = sorted(os.path.basename(p)[:-2]
               for p in glob.glob(os.path.join(ROOT, "fuzz", "*.c")))
ok(len(names) >= 7, "seven targets or more: %s" % " ".join(names))
for n in names:
    work = rrtest.subdir("corpus-" + n)
    seeds = os.path.join(ROOT, "fuzz", "corpus", n)
    ok(len(os.listdir(seeds)) > 0, "%s: a seed corpus" % n)
    r = subprocess.run([os.path.join(ROOT, "build", "fuzz", "fuzz", n),
                        "-max_total_time=%d" % secs, "-print_final_stats=1",
                        "-artifact_prefix=%s/" % work, work, seeds],
                       capture_output=True, text=True, timeout=secs + 120)
    execs = [l.split()[-1] for l in r.stderr.splitlines()
             if "number_of_executed_units" in l]
    good = ok(r.returncode == 0 and not glob.glob(work + "/crash-*"),
              "%s: %s runs, no finding" % (n, execs[0] if execs else "?"))
    if not good:
        diag(r.stderr[-4000:])
done()
