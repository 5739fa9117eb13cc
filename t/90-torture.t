#!/usr/bin/env python3
# 90-torture.t - the seeded fault-injection campaign (t/lib/torture.py):
# 300 scenarios of drops, stalls, garbage, 452/250 mixes, kills, full or
# read-only journal filesystems and refused MAILs, each rerun as Postfix
# would; no recipient lost, none delivered twice outside the end-of-data
# window, every run accounted for and within its deadline.
# RR_TORTURE_SEED, RR_TORTURE_N and RR_TORTURE_J change the campaign.
import os
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, diag, done
import torture

rrtest.require_root()
rrtest.agent_binary()

# Causes the fixes of issue 11 are closing right now (rows 2, 3/4, 5, 8):
# reported as TODO until they land, every other cause fails.
KNOWN = {"journal-disk": "issue 11 row 2", "mail-refused": "issue 11 rows 3-4",
         "limits-mailmax": "issue 11 row 5", "sigterm": "issue 11 row 8"}

seed = int(os.environ.get("RR_TORTURE_SEED", "1"))
n = int(os.environ.get("RR_TORTURE_N", "300"))
jobs = int(os.environ.get("RR_TORTURE_J", "2"))
summary = torture.campaign(seed, n, jobs, progress=diag)
for line in torture.table(summary).splitlines():
    diag(line)
st = summary["stats"]
for f in torture.FAMILIES:
    ok(st[f].get("scenarios", 0) >= n // 14,
       "family %s has its share: %d of %d scenarios"
       % (f, st[f].get("scenarios", 0), n))
ok(st["kill"].get("kills", 0) > 0, "some kills landed during a run")
causes = torture.by_cause(summary)
for kind in ("accounting", "false-sent", "duplicate", "false-bounce", "lost",
             "deadline", "crash", "harness"):
    bad = {c: k for (kd, c), k in causes.items() if kd == kind}
    unknown = {c: k for c, k in bad.items() if c not in KNOWN}
    ok(not unknown, "no %s failures (%s)" % (kind, unknown or "none"))
    for c, k in sorted(bad.items()):
        if c in KNOWN:
            print("not ok %d - %s failures caused by %s: %d # TODO %s"
                  % (rrtest._count + 1, kind, c, k, KNOWN[c]), flush=True)
            rrtest._count += 1
for f in summary["failures"][:30]:
    diag("seed %d (%s): %s; replay: %s" % (
        f["seed"], f["family"], f["fail"][0][:2], torture.replay_cmd(f["seed"])))
ok(summary["elapsed"] < 180, "%d scenarios in %.0fs (under 3 minutes)"
   % (n, summary["elapsed"]))
done()
