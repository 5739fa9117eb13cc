#!/usr/bin/env python3
# 98-torture-lmtp.t - the LMTP-mode fault campaign (t/lib/torture_lmtp.py):
# 300 scenarios of resident agents driven through 2-4 messages per LMTP
# session with server faults, the client vanishing before, during or
# after DATA, SIGKILL/SIGTERM of the agent inside a message, spawn(8)'s
# time limit, the same message to a second agent while the first still
# delivers it, a resident --lmtp-daemon (2 workers) with a worker
# SIGKILLed, the parent reloaded (SIGHUP) or stopped (SIGTERM, then
# started again) or the client gone inside a message, and messages
# without a queue id (the journal keyed by digest), each message handed
# over again as Postfix would: every accepted RCPT answered once, every
# 2xx true and every 5xx too, none lost, none taken twice outside the
# end-of-data window, the time-limit margin kept, the daemon's 421s, exit
# and replaced workers as documented and none of its processes left.
# RR_TORTURE_SEED, RR_TORTURE_N and RR_TORTURE_J change the campaign.
import os
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
import torture_lmtp

rrtest.require_root()
rrtest.agent_binary()

seed = int(os.environ.get("RR_TORTURE_SEED", "1"))
n = int(os.environ.get("RR_TORTURE_N", "300"))
jobs = int(os.environ.get("RR_TORTURE_J", "2"))
s = torture_lmtp.campaign(seed, n, jobs)
for line in torture_lmtp.table(s).splitlines():
    diag(line)
for r in s["failures"][:10]:
    diag("seed %d (%s): %s" % (r["seed"], r["family"], "; ".join(
        "%s: %s" % (a, d) for a, b, d in r["fail"][:3])))
tot = sum(c["scenarios"] for c in s["stats"].values())
is_(tot, n, "%d scenarios ran" % n)
is_(len(s["failures"]), 0, "no invariant broken in %d LMTP-mode scenarios "
    "(%d recipients)" % (n, sum(c["recipients"] for c in
                                s["stats"].values())))
ok(sum(c["sessions"] for c in s["stats"].values()) > n, "messages were "
   "handed over again after the faults")
done()
