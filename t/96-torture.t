#!/usr/bin/env python3
# 96-torture.t - the seeded fault-injection campaign (t/lib/torture.py):
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
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

# Open findings, reported and not fixed yet (their code is another
# task's): TODO until then, every other cause fails. None open now.
OPEN = {}

# A finding of the campaign, replayed directly: a "250" after the first
# body line, before the final dot. Nothing may be logged sent that the
# server did not queue (fixed in smtp-tx.c: a RSET after the dot; t/25).
sink = SmtpSink({"rules": [{"cmd": "BODY", "after": 1,
                            "raw": ["250 2.0.0 early"]}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
early = rrtest.Agent(name="early", deadline="10s",
                     timeouts=torture.TIMEOUTS)
res = early.run(["e1@d1.test"], queue_id="EA1",
                nexthop="[127.0.0.1]:%d" % port)
sent = rrtest.agent_status(early.log_lines(), status="sent")
ok(not (sent and not sink.messages()),
   "a reply before the final dot is not taken for the message (logged "
   "sent %d, queued %d)" % (len(sent), len(sink.messages())))

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
    known = {c: k for c, k in bad.items() if c in OPEN}
    bad = {c: k for c, k in bad.items() if c not in OPEN}
    ok(not bad, "no %s failures%s" % (kind, " (by cause: %s)" % bad
                                      if bad else ""))
    for c, k in sorted(known.items()):
        rrtest._count += 1
        print("not ok %d - %s: %d %s failures # TODO open: %s"
              % (rrtest._count, c, k, kind, OPEN[c]), flush=True)
for f in summary["failures"][:30]:
    diag("seed %d (%s): %s; replay: %s" % (
        f["seed"], f["family"], f["fail"][0][:2], torture.replay_cmd(f["seed"])))
# under 3 minutes on an idle 2-CPU machine (79 s measured); the bound
# here only catches a campaign that hangs, not a busy machine
diag("%d scenarios in %.0fs" % (n, summary["elapsed"]))
ok(summary["elapsed"] < 600, "the campaign ends (%.0fs)" % summary["elapsed"])
done()
