#!/usr/bin/env python3
# 54-dsn-timeout.t - a DSN sendmail that hangs: it gets
# its own time limit inside the run's deadline; at the limit its process
# group is killed and reaped, the bounced recipient is not journaled, and
# the batch defers 4.3.0 saying so, long before the watchdog (deadline +
# 30 s). The next run, with a working sendmail, skips the delivered
# recipient, bounces the other again and sends the DSN: nothing twice.
import os
import re
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

sink = SmtpSink({"rules": [{"cmd": "RCPT", "addr_re": "^bad",
                            "reply": "550 5.1.1 User unknown"}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)

DEADLINE = 12
agent = rrtest.Agent(name="dsnhang", relay="[127.0.0.1]:%d" % port,
                     deadline="%ds" % DEADLINE)
pidfile = os.path.join(agent.dir, "sleep.pid")
seen = os.path.join(agent.dir, "dsn.seen")
# sh starts a child that never ends and waits for it: only a kill of the
# whole process group ends both
agent.write_conf(dsn_sendmail="/bin/sh -c 'sleep 1000 & echo $! > %s; "
                 "wait' sh" % pidfile)
RCPTS = ["good@d1.test", "bad@d1.test"]
# one message for both runs: the journal keys on its digest
MSG = rrtest.sample_message("sender@src.test", RCPTS)


def pid_gone(pid):
    """pid_gone - no such process, or a zombie about to be reaped"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- 1. the hanging sendmail ----------------------------------------------
t0 = time.monotonic()
res = agent.run(RCPTS, queue_id="DSNHANG1", message=MSG)
took = time.monotonic() - t0
lines = agent.log_lines()
ok(rrtest.status_line_ok(res), "one stdout line, stderr empty")
is_(res.rc, 75, "hanging sendmail: exit 75")
like(res.out, r"^4\.3\.0 1 of 2 recipients failed permanently and the "
     r"notification to the sender could not be sent \(cannot submit DSN: "
     r"/bin/sh timed out after (9|10) s\)",
     "hanging sendmail: 4.3.0, the true reason")
ok(took < DEADLINE + 2, "hanging sendmail: the agent ends within its "
   "deadline (%.1f s; watchdog at %d s)" % (took, DEADLINE + 30))
ok(took > DEADLINE - 4, "hanging sendmail: it waited for sendmail first "
   "(%.1f s)" % took)
pid = int(rrtest.read_file(pidfile).strip() or 0) \
    if os.path.exists(pidfile) else 0
ok(pid > 1 and rrtest.wait_until(lambda: pid_gone(pid), 5),
   "hanging sendmail: what it started is killed too (pid %d)" % pid)
is_(sink.rcpt_count("good@d1.test"), 1, "good@ delivered once")
ok([l for l in lines if re.search(r"DSNHANG1: .*timed out after \d+ s; "
                                  r"the bounced recipients are tried "
                                  r"again later", l)],
   "hanging sendmail: logged")

# --- 2. the next run with a sendmail that works -----------------------------
agent.write_conf(dsn_sendmail="/bin/sh -c 'cat > %s'" % seen)
res = agent.run(RCPTS, queue_id="DSNHANG1", message=MSG)
is_(res.rc, 0, "retry: exit 0")
like(res.out, r"^2\.0\.0 delivered 0 \(1 earlier\), 1 failed: DSN sent",
     "retry: the bounced one now gets its DSN")
is_(sink.rcpt_count("good@d1.test"), 1, "retry: good@ not delivered again")
is_(sink.rcpt_count("bad@d1.test"), 2, "retry: bad@ tried again")
like(rrtest.read_file(seen) if os.path.exists(seen) else "",
     r"Final-Recipient: rfc822; bad@d1\.test",
     "retry: the DSN names bad@")
done()
