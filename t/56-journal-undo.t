#!/usr/bin/env python3
# 56-journal-undo.t - a recipient the server never took is never skipped
# as delivered (DESIGN §7, RFC 5321 §6.1). The journal (on a small tmpfs)
# has the recipient "in flight" before the final dot; the server answers
# the dot with 451 after a pause in which the disk fills up, so the agent
# cannot put the row back. That happens in two runs in a row; a third run,
# with the disk free again and the server willing, must deliver the
# message: the server never had it.
import os
import subprocess
import sys
import threading
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

RCPT = "u1@d1.test"
FAILED_RUNS = 2


def mount_tmpfs(path, kib):
    pw = rrtest.ensure_user()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                        "size=%dk,uid=%d,gid=%d,mode=0750"
                        % (kib, pw.pw_uid, pw.pw_gid), "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        rrtest.skip_all("cannot mount a tmpfs: %s" % r.stderr.strip())
    rrtest.at_cleanup(lambda: subprocess.run(["umount", "-l", path]))


def fill(path):
    """fill - a file that takes every free block of PATH's filesystem"""
    st = os.statvfs(path)
    with open(os.path.join(path, "filler"), "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize))
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def dots(sink):
    return len([e for e in sink.commands() if e["line"] == "."])


agent = rrtest.Agent(name="agent56", deadline="30s")
mount_tmpfs(agent.journal_dir, 1024)
# transaction 1 is the warm-up; 2 and 3 get their dot refused after a pause
sink = SmtpSink({"rules": [{"cmd": "DOT", "txn": [2, 3], "delay": 2,
                            "reply": "451 4.3.0 Error: queue file write "
                                     "error, try again"}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
nexthop = "[127.0.0.1]:%d" % port
warm = agent.run(["warm@d1.test"], queue_id="56F0001", nexthop=nexthop)
is_(warm.rc, 0, "the warm-up run delivers (journal created)")

qid = "56A0001"
msg = rrtest.sample_message("s@src.test", [RCPT])
for i in range(FAILED_RUNS):
    before = dots(sink)
    out = {}
    t = threading.Thread(target=lambda: out.update(
        res=agent.run([RCPT], queue_id=qid, nexthop=nexthop, message=msg)))
    t.start()
    seen = rrtest.wait_until(lambda: dots(sink) > before, timeout=20,
                             what="the final dot of run %d" % (i + 1))
    left = fill(agent.journal_dir) if seen else -1
    t.join(60)
    os.unlink(os.path.join(agent.journal_dir, "filler"))
    res = out.get("res")
    ok(seen, "run %d: the final dot went out (the rows are in flight)"
       % (i + 1))
    ok(left == 0, "run %d: the disk was full while the server paused "
       "(%d bytes left)" % (i + 1, left))
    is_(res.rc if res else None, 75, "run %d: deferred (451 to the dot)"
        % (i + 1))
is_(sink.delivered().count(RCPT), 0, "the server has not taken it so far")

res = agent.run([RCPT], queue_id=qid, nexthop=nexthop, message=msg)
ok(rrtest.status_line_ok(res), "run 3: one stdout line, stderr empty")
is_(res.rc, 0, "run 3: exit 0")
good = is_(sink.delivered().count(RCPT), 1,
           "run 3: the message reached the server, once (never skipped "
           "as delivered)")
if not good:
    diag(repr(res))
    diag("\n".join(l for l in agent.log_lines() if qid in l)[-3000:])
done()
