#!/usr/bin/env python3
# 24-agent-sigterm.t - SIGTERM during a multi-transaction run (LIMITS
# RCPTMAX=2, 10 recipients, a server slow to answer the final dot): the
# agent opens no new transaction or connection, lets the one in flight
# finish within its few seconds of grace (else closes without the dot),
# defers the rest with 4.3.2, writes the journal and exits 75. A rerun of
# the same argv then delivers the rest: every recipient exactly once.
import os
import signal
import subprocess
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

agent = rrtest.Agent(name="agent24", deadline="60s")
GRACE = 5           # deliver.c DELIVER_STOP_GRACE
rl = ["r%d@d1.test" % i for i in range(1, 11)]
EHLO = ["PIPELINING", "ENHANCEDSTATUSCODES", "LIMITS RCPTMAX=2"]


def start(qid, port, msg):
    """start - the agent in the background, as pipe(8) would run it"""
    pw = rrtest.ensure_user()
    p = subprocess.Popen([agent.binary, "-c", agent.conf, "-i", qid, "-n",
                          "[127.0.0.1]:%d" % port, "-f", "s@src.test",
                          "--"] + rl,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=agent.env(),
                         cwd=agent.dir, user=pw.pw_uid, group=pw.pw_gid,
                         extra_groups=[])
    p.stdin.write(msg.encode())
    p.stdin.close()
    p.stdin = None          # communicate() must not flush it again
    return p


def client_lines(sink, line):
    return len([e for e in sink.commands() if e["line"] == line])


CASES = [
    # name, extra rules, when to send SIGTERM (a predicate on the sink)
    ("while the server is slow to answer the 1st dot",
     [{"cmd": "DOT", "delay": 1.0}],
     lambda s: client_lines(s, ".") >= 1),
    ("while the server is slow to answer the 3rd dot",
     [{"cmd": "DOT", "delay": 1.0}],
     lambda s: client_lines(s, ".") >= 3),
    ("right after the 2nd MAIL",
     [{"cmd": "DOT", "delay": 0.3}],
     lambda s: len(s.commands("MAIL")) >= 2),
    ("while DATA waits longer than the grace (no dot)",
     [{"cmd": "DATA", "txn": 2, "delay": GRACE + 3}],
     lambda s: len(s.commands("DATA")) >= 2),
]

for n, (name, rules, when) in enumerate(CASES):
    sink = SmtpSink({"ehlo": EHLO, "rules": rules})
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    qid = "24A%04X" % n
    msg = rrtest.sample_message("s@src.test", rl)
    p = start(qid, port, msg)
    rrtest.at_cleanup(lambda p=p: p.poll() is None and p.kill())
    rrtest.wait_until(lambda: when(sink) or p.poll() is not None, 20,
                      what=name)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=GRACE + 10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    took = time.monotonic() - t0
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    before = sink.delivered()
    good = is_(p.returncode, 75, "%s: exit 75" % name)
    good &= like(out, r"^4\.3\.2 .*stopped", "%s: 4.3.2 at byte 0, "
                 "the agent was stopped" % name)
    good &= is_(err, "", "%s: nothing on stderr" % name)
    good &= ok(took < GRACE + 3, "%s: ended %.1f s after SIGTERM (grace %d)"
               % (name, took, GRACE))
    good &= ok(0 < len(before) < len(rl) or n == 0,
               "%s: stopped in the middle (%d of %d delivered)"
               % (name, len(before), len(rl)))
    st = rrtest.agent_status(agent.log_lines())
    good &= is_(len([1 for q, r, d, s, t in st if q == qid]), len(rl),
                "%s: one log line per recipient" % name)
    mails = len(sink.commands("MAIL"))
    res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % port,
                    message=msg)
    good &= is_(res.rc, 0, "%s: the rerun: exit 0" % name)
    good &= is_(sink.delivered(), sorted(rl),
                "%s: after the rerun every recipient arrived exactly once"
                % name)
    good &= ok(len(sink.commands("MAIL")) > mails,
               "%s: the rerun delivered the rest" % name)
    if not good:
        diag("took %.1f s; out %r err %r" % (took, out, err))
        diag(sink.dump())
        diag("\n".join(l for l in agent.log_lines() if qid in l))
    sink.stop()

done()
