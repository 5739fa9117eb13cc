#!/usr/bin/env python3
# 23-journal-full.t - exactly once on a nearly full disk (DESIGN §7): the
# journal (and the delivery log beside it) on a small tmpfs filled up to a
# few KiB, 40 recipients and 1 greylisted one (so every run ends with 75
# and Postfix would retry the same argv), 4 runs. The agent writes the
# recipients "in flight" before the final dot and sends no dot when that
# fails; a write that fails after the 250 costs at most one extra copy per
# recipient, never one per retry. The sink counts the copies.
import os
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

GREY = "grey@d1.test"
RUNS = 4
FREE_KIB = (4, 8, 16, 24, 32, 48, 64)


def mount_tmpfs(path, kib):
    pw = rrtest.ensure_user()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                        "size=%dk,uid=%d,gid=%d,mode=0750"
                        % (kib, pw.pw_uid, pw.pw_gid), "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        rrtest.skip_all("cannot mount a tmpfs: %s" % r.stderr.strip())
    rrtest.at_cleanup(lambda: subprocess.run(["umount", "-l", path]))


def fill(path, leave_kib):
    """fill - a file that leaves LEAVE_KIB KiB free on PATH's filesystem"""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    size = max(0, free - leave_kib * 1024)
    with open(os.path.join(path, "filler"), "wb") as f:
        f.write(b"\0" * size)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 1024


rl = ["r%02d@d1.test" % i for i in range(1, 41)] + [GREY]
script = {"rules": [{"cmd": "RCPT", "addr": GREY,
                     "reply": "450 4.2.0 <grey@d1.test>: Recipient address "
                     "rejected: Greylisted, try again later"}]}
worst = {}
for n, kib in enumerate(FREE_KIB):
    agent = rrtest.Agent(name="agent23-%d" % kib, deadline="30s")
    mount_tmpfs(agent.journal_dir, 1024)
    sink = SmtpSink(script)
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    # a first delivery creates the journal and the delivery log
    warm = agent.run(["warm@d1.test"], queue_id="23F%04X" % n,
                     nexthop="[127.0.0.1]:%d" % port)
    is_(warm.rc, 0, "%d KiB: the warm-up run delivers" % kib)
    left = fill(agent.journal_dir, kib)
    qid = "23A%04X" % n
    msg = rrtest.sample_message("s@src.test", rl)
    rcs = []
    for i in range(RUNS):
        res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % port,
                        message=msg)
        rcs.append(res.rc)
        ok(rrtest.status_line_ok(res), "%d KiB, run %d: one stdout line, "
           "stderr empty" % (kib, i + 1))
    copies = {r: sink.delivered().count(r) for r in rl[:-1]}
    most = max(copies.values())
    worst[kib] = (most, sum(1 for c in copies.values() if c > 0), rcs)
    good = ok(most <= 2, "%d KiB free (%d measured): each of the 40 arrived "
              "at most twice in %d runs (most: %d)" % (kib, left, RUNS, most))
    good &= ok(all(rc in (75,) for rc in rcs),
               "%d KiB: every run ends with 75 (the greylisted one)" % kib)
    good &= is_(sink.delivered().count(GREY), 0,
                "%d KiB: the greylisted one never delivered" % kib)
    if not good:
        diag("runs: %r" % rcs)
        diag("\n".join(l for l in agent.log_lines() if qid in l)[-4000:])
    sink.stop()

diag("free KiB -> (most copies of one recipient, recipients that arrived, "
     "exit codes): %r" % worst)
done()
