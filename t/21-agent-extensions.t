#!/usr/bin/env python3
# 21-agent-extensions.t - the ESMTP extensions the agent must honour, as
# seen on the wire: SIZE= and a server SIZE limit (5.3.4), BODY=8BITMIME,
# SMTPUTF8 (5.6.7 when not offered), LIMITS RCPTDOMAINMAX, CRLF +
# dot-stuffing of an LF message, and a per-connection recipient limit.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

agent = rrtest.Agent(deadline="30s")
_qid = [0x21000]


def run(script, rcpts, msg):
    """run - a fresh sink with SCRIPT and one agent run: (sink, result)."""
    sink = SmtpSink(script)
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    _qid[0] += 1
    res = agent.run(rcpts, queue_id="%X" % _qid[0], message=msg,
                    nexthop="[127.0.0.1]:%d" % port)
    ok(rrtest.status_line_ok(res), "one stdout line, stderr empty")
    return sink, res


def mail_lines(sink):
    return [e["line"] for e in sink.commands("MAIL")]


def status_of(rcpt):
    """status_of - (dsn, status) of the newest log line for RCPT."""
    st = [s for s in rrtest.agent_status(agent.log_lines())
          if s[1].lower() == rcpt.lower()]
    return (st[-1][2], st[-1][3]) if st else (None, None)


ascii_msg = ("From: s@src.test\nSubject: x\n\nline one\n.dot line\n"
             "..two\nlast line without newline")
# DATA form: CRLF line ends; the size counts CRLF, not the stuffing
data_size = len(ascii_msg.replace("\n", "\r\n")) + 2

# --- 1. SIZE= with the exact DATA-form size, body CRLF and dot-stuffed -------
sink, res = run({"ehlo": ["PIPELINING", "SIZE 10240000",
                          "ENHANCEDSTATUSCODES"]}, ["a@d1.test"], ascii_msg)
is_(res.rc, 0, "SIZE offered: delivered")
m = mail_lines(sink)
is_(len(m), 1, "one MAIL command")
like(m[0] if m else "", r"SIZE=%d\b" % data_size,
     "MAIL carries SIZE=%d (CRLF size of the message)" % data_size)
ok(m and "BODY=" not in m[0], "no BODY= for a 7-bit message")
body = sink.messages()[0]["body"] if sink.messages() else ""
is_(body.rstrip("\n"), ascii_msg, "the body arrived unchanged after "
    "CRLF conversion and dot-stuffing were undone")

# --- 2. SIZE limit below the message: bounce 5.3.4, nothing sent ------------
big = ascii_msg + "\n" + ("x" * 70 + "\n") * 40
sink, res = run({"ehlo": ["PIPELINING", "SIZE 1000"]},
                ["b1@d1.test", "b2@d1.test"], big)
is_(res.rc, 69, "SIZE 1000 < message: every recipient bounced: exit 69")
like(res.out, r"^5\.3\.4 ", "status 5.3.4 at byte 0")
like(res.out, r"exceeds size limit 1000", "status names the limit")
is_(mail_lines(sink), [], "no MAIL command was sent")
is_(status_of("b1@d1.test"), ("5.3.4", "bounced"), "b1 logged 5.3.4")

# --- 3. 8-bit body: BODY=8BITMIME only when offered -------------------------
msg8 = "From: s@src.test\nSubject: caf\u00e9\n\nna\u00efve body\n"
sink, res = run({"ehlo": ["PIPELINING", "8BITMIME"]}, ["c@d1.test"], msg8)
is_(res.rc, 0, "8-bit message, 8BITMIME offered: delivered")
like(mail_lines(sink)[0] if mail_lines(sink) else "", r" BODY=8BITMIME",
     "MAIL carries BODY=8BITMIME")
sink, res = run({"ehlo": ["PIPELINING"]}, ["c@d1.test"], msg8)
ok(mail_lines(sink) and "BODY=" not in mail_lines(sink)[0],
   "no BODY= when 8BITMIME is not offered")

# --- 4. SMTPUTF8: needed by one recipient --------------------------------
u = "j\u00fcrgen@d1.test"
sink, res = run({"ehlo": ["PIPELINING", "ENHANCEDSTATUSCODES"]},
                [u, "plain@d1.test"], ascii_msg)
is_(status_of(u), ("5.6.7", "bounced"),
    "UTF-8 recipient, no SMTPUTF8 offered: bounced 5.6.7")
is_(status_of("plain@d1.test"), ("2.0.0", "sent"),
    "the ASCII recipient is still delivered")
is_(sink.delivered(), ["plain@d1.test"], "only the ASCII one on the wire")
is_(res.rc, 0, "mixed bounce + delivery: exit 0 (the agent's DSN reports "
    "the bounce)")

sink, res = run({"ehlo": ["PIPELINING", "SMTPUTF8", "8BITMIME"]},
                [u, "plain@d1.test"], ascii_msg)
is_(res.rc, 0, "SMTPUTF8 offered: both delivered")
like(mail_lines(sink)[0] if mail_lines(sink) else "", r" SMTPUTF8",
     "MAIL carries SMTPUTF8")
is_(sorted(sink.delivered()), sorted([u, "plain@d1.test"]),
    "both recipients accepted")

# --- 5. LIMITS RCPTDOMAINMAX=1: one domain per transaction from the start ---
rl = ["x%d@d%d.test" % (i, i % 3) for i in range(9)]
sink, res = run({"ehlo": ["PIPELINING", "LIMITS RCPTDOMAINMAX=1"]}, rl,
                ascii_msg)
is_(res.rc, 0, "RCPTDOMAINMAX=1: all delivered")
tx = sink.transactions()
is_(len(tx), 3, "three transactions for three domains")
ok(all(len({a.split("@")[1] for a in t[1]}) == 1 for t in tx),
   "each transaction holds one domain")
is_(len(sink.commands("RCPT")), 9, "no RCPT sent twice (nothing refused)")

# --- 6. a per-connection recipient limit: a new connection, not a defer ----
# the server takes 2 RCPTs per transaction and 2 transactions per
# connection; the first RCPT of a third transaction is refused
rl = ["p%d@d1.test" % i for i in range(1, 10)]
sink, res = run({"rcpt_max": 2,
                 "rules": [{"cmd": "RCPT", "ctxn": "3+",
                            "reply": "452 4.5.3 Too many recipients for "
                                     "this connection"}]}, rl, ascii_msg)
is_(res.rc, 0, "per-connection limit: all 9 delivered in one run")
is_(sink.delivered(), sorted(rl), "each recipient accepted exactly once")
is_(sink.connections(), 3, "three connections (4 + 4 + 1 recipients)")
ok(any("new connection after" in l for l in agent.log_lines()),
   "the agent logged the new connection")

# a server that refuses the first RCPT even on a fresh connection: deferred
# after one new connection, not retried forever
sink, res = run({"rcpt_max": 2,
                 "rules": [{"cmd": "RCPT", "txn": "2+",
                            "reply": "452 4.5.3 Too many recipients"}]},
                rl[:5], ascii_msg)
is_(res.rc, 75, "refused on a fresh connection too: deferred (exit 75)")
is_(sink.delivered(), sorted(rl[:2]), "the first two delivered")

done()
