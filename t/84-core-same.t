#!/usr/bin/env python3
# 84-core-same.t - one delivery core under two front ends (DESIGN §10):
# for the same scripted server and the same envelope, pipe(8) mode and
# LMTP mode give every recipient the same outcome (status and DSN code in
# the agent's Postfix-style log line), make the same transactions on the
# wire, and LMTP mode answers each recipient with the class its outcome
# has (2xx sent, 4xx deferred, 5xx bounced). Scripts: RapidRetry (452
# after 3), one domain per transaction, a greylisted and an unknown
# recipient, a 421 in the middle, a server that is down.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
from lmtpclient import LmtpAgent
from smtpsink import SmtpSink

rrtest.require_root()

RCPTS = ["a1@d1.test", "a2@d1.test", "grey@d1.test", "a3@d1.test",
         "b1@d2.test", "gone@d2.test", "b2@d2.test", "a4@d1.test"]
SCRIPTS = {
    "rapid-452": {"rcpt_max": 3},
    "one-domain": {"one_domain": True},
    "grey-unknown": {"rules": [
        {"cmd": "RCPT", "addr": "grey@d1.test",
         "reply": "450 4.2.0 Greylisted, try again later"},
        {"cmd": "RCPT", "addr": "gone@d2.test",
         "reply": "550 5.1.1 User unknown"}]},
    "421-mid": {"rcpt_max": 4, "rules": [
        {"cmd": "MAIL", "txn": 2, "reply": "421 4.3.2 closing", "close":
         True}]},
}
MSG = rrtest.sample_message("s@src.test", RCPTS)
STATUS = re.compile(r"\]: (\S+): to=<([^>]*)>,.*dsn=(\S+), status=(\w+)")


def outcomes(lines, qid):
    """outcomes - {rcpt: (status, dsn)} of QID in the agent's log."""
    out = {}
    for l in lines:
        m = STATUS.search(l)
        if m and m.group(1) == qid:
            out[m.group(2).lower()] = (m.group(4), m.group(3))
    return out


def wire(sink, before):
    """wire - per transaction the RCPTs the server accepted."""
    return [sorted(m["rcpts"]) for m in sink.messages()[before:]]


n = [0]
for name, script in sorted(SCRIPTS.items()):
    got = {}
    for mode in ("pipe", "lmtp"):
        sink = SmtpSink(dict(script, hostname="same.test"))
        port = sink.start()
        rrtest.at_cleanup(sink.stop)
        agent = rrtest.Agent(name="%s-%s" % (name, mode),
                             relay="[127.0.0.1]:%d" % port)
        n[0] += 1
        qid = "84C%05X" % n[0]
        if mode == "pipe":
            res = agent.run(RCPTS, queue_id=qid)
            replies = None
        else:
            s = LmtpAgent(agent)
            s.reply()
            s.cmd("LHLO postfix.test")
            mail, rr, data, replies = s.transaction("s@src.test", RCPTS, MSG,
                                                    ident=qid)
            s.cmd("QUIT")
            s.wait()
        got[mode] = (outcomes(agent.log_lines(), qid), wire(sink, 0),
                     replies)
        sink.stop()
    po, pw, _ = got["pipe"]
    lo, lw, lr = got["lmtp"]
    is_(len(po), len(RCPTS), "%s: pipe mode, one outcome per recipient"
        % name)
    if not is_(lo, po, "%s: LMTP mode gives each recipient the same status "
               "and DSN code as pipe mode" % name):
        diag("pipe %r\nlmtp %r" % (po, lo))
    is_(lw, pw, "%s: the same transactions on the wire" % name)
    cls = {"sent": "2", "deferred": "4", "bounced": "5"}
    want = [cls[po.get(r.lower(), ("?", ""))[0]] if r.lower() in po else "?"
            for r in RCPTS]
    is_([x[:1] for x in (lr or [])], want, "%s: LMTP replies per recipient "
        "in RCPT order, by outcome class" % name)

# a server that is down: the same deferral in both modes
dead = rrtest.free_port()
res_out = {}
for mode in ("pipe", "lmtp"):
    agent = rrtest.Agent(name="dead-%s" % mode, relay="[127.0.0.1]:%d" % dead)
    qid = "84D%s" % ("1" if mode == "pipe" else "2")
    if mode == "pipe":
        agent.run(RCPTS[:2], queue_id=qid)
    else:
        s = LmtpAgent(agent)
        s.reply()
        s.cmd("LHLO postfix.test")
        s.transaction("s@src.test", RCPTS[:2], MSG, ident=qid)
        s.cmd("QUIT")
        s.wait()
    res_out[mode] = outcomes(agent.log_lines(), qid)
is_(res_out["lmtp"], res_out["pipe"], "nobody listening: the same "
    "deferral (4.4.1) in both modes: %r" % (res_out["pipe"],))
done()
