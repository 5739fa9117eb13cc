#!/usr/bin/env python3
# 22-agent-refusals.t - rapidretry-agent against the scripted server where
# a server refuses MAIL or asks for new connections (DESIGN §6):
#  - a refused MAIL sends no message, even when a server against RFC 2920
#    takes the pipelined RCPTs and answers DATA with 354 (no body, no
#    lone "."), and the retry delivers exactly once;
#  - a soft error at the greeting, EHLO or MAIL moves to the next MX with
#    every pending recipient; after the last MX they are deferred with the
#    server's own reply; 5xx at MAIL still bounces;
#  - LIMITS MAILMAX reconnects are not failures (not held against
#    max_reconnects, never "no server to deliver to").
#  - a connection kept for the next group of a lane (or the next LMTP
#    message) brings its transaction count: MAILMAX is never exceeded.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
import dnsserver
from mxtest import AddrSink, common_port, start_dns
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

agent = rrtest.Agent(name="agent22", deadline="30s")
_qid = [0x22A000]


def rcpts(n, domain="d1.test", prefix="r"):
    return ["%s%d@%s" % (prefix, i, domain) for i in range(1, n + 1)]


def new_qid():
    _qid[0] += 1
    return "%X" % _qid[0]


def sink_run(sink, rl, qid, msg):
    """sink_run - one agent run to SINK on 127.0.0.1"""
    res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % sink.port,
                    message=msg)
    ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty" % qid)
    return res


def statuses(qid, status=None):
    return sorted(r.lower() for q, r, d, s, t in
                  rrtest.agent_status(agent.log_lines(), status=status)
                  if q == qid)


def show(res, *sinks):
    diag(repr(res))
    for s in sinks:
        diag(s.dump())


# --- 1. MAIL refused with 4xx, a lenient server takes RCPT and DATA ---------
rl = rcpts(3)
for code, reply in (("4xx", "452 4.3.1 Insufficient system storage"),
                    ("5xx", "550 5.7.1 Sender address rejected")):
    sink = SmtpSink({"mail_lenient": True,
                     "rules": [{"cmd": "MAIL", "txn": 1, "reply": reply}]})
    sink.start()
    rrtest.at_cleanup(sink.stop)
    qid = new_qid()
    msg = rrtest.sample_message("s@src.test", rl)
    res = sink_run(sink, rl, qid, msg)
    name = "MAIL %s, lenient server" % code
    dots = [e for e in sink.commands() if e["line"] == "."]
    good = is_(sink.messages(), [], "%s: no message reached the server"
               % name)
    good &= is_(dots, [], "%s: no final dot was sent" % name)
    good &= ok(any(e["line"] == "DATA" for e in sink.commands()),
               "%s: the pipelined DATA went out (the case under test)"
               % name)
    if code == "4xx":
        good &= is_(res.rc, 75, "%s: exit 75" % name)
        good &= like(res.out, r"^4\.3\.1 ", "%s: the server's 4.3.1" % name)
        good &= is_(statuses(qid, "deferred"), sorted(rl),
                    "%s: all deferred" % name)
        res2 = sink_run(sink, rl, qid, msg)
        good &= is_(res2.rc, 0, "%s: the retry: exit 0" % name)
        good &= is_(sink.delivered(), sorted(rl),
                    "%s: after the retry each recipient arrived once" % name)
    else:
        good &= is_(res.rc, 69, "%s: exit 69" % name)
        good &= like(res.out, r"^5\.7\.1 ", "%s: 5.7.1" % name)
        good &= is_(statuses(qid, "bounced"), sorted(rl),
                    "%s: all bounced (nothing was delivered)" % name)
    if not good:
        show(res, sink)

# --- 2. LIMITS MAILMAX=1: ten connections are not failures ------------------
rl = rcpts(10)
sink = SmtpSink({"ehlo": ["PIPELINING", "ENHANCEDSTATUSCODES",
                          "LIMITS RCPTMAX=1 MAILMAX=1"]})
sink.start()
rrtest.at_cleanup(sink.stop)
qid = new_qid()
res = sink_run(sink, rl, qid, None)
good = is_(res.rc, 0, "MAILMAX=1: exit 0")
good &= like(res.out, r"^2\.0\.0 ", "MAILMAX=1: 2.0.0")
good &= is_(sink.delivered(), sorted(rl), "MAILMAX=1: 10 delivered, once")
good &= is_(sink.connections(), 10, "MAILMAX=1: 10 connections")
good &= is_([len(t[1]) for t in sink.transactions()], [1] * 10,
            "MAILMAX=1: one recipient per transaction")
good &= ok(not [l for l in agent.log_lines() if qid in l and
                "no server to deliver to" in l],
           "MAILMAX=1: never 'no server to deliver to'")
if not good:
    show(res, sink)

# --- 2b. MAILMAX holds for a connection the next group reuses --------------
# d1.test and d2.test go to the same server but are separate groups (d2.test
# has a [tls_policy] entry), one lane: the second group takes over the
# first one's connection, which already carried its MAILMAX=1 message.
sink = SmtpSink({"ehlo": ["PIPELINING", "ENHANCEDSTATUSCODES",
                          "LIMITS MAILMAX=1"],
                 "rules": [{"cmd": "MAIL", "ctxn": "2+",
                            "reply": "452 4.3.2 Error: too many messages "
                                     "on this connection (LIMITS MAILMAX)"}]})
sink.start()
rrtest.at_cleanup(sink.stop)
route = "relay:[127.0.0.1]:%d" % sink.port
agent.write_conf(relay="", extra_text="\n[routes]\nd1.test = %s\n"
                 "d2.test = %s\n\n[tls_policy]\nd2.test = may\n"
                 % (route, route))
rl = ["a1@d1.test", "b1@d2.test"]
qid = new_qid()
res = agent.run(rl, queue_id=qid, nexthop="batch")
ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty" % qid)
per_conn = {}
for conn, _ in sink.transactions():
    per_conn[conn] = per_conn.get(conn, 0) + 1
good = is_(res.rc, 0, "MAILMAX=1, two groups on one lane: exit 0")
good &= is_(sink.delivered(), sorted(rl),
            "MAILMAX=1, two groups: both delivered, once")
good &= is_(sorted(per_conn.values()), [1, 1],
            "MAILMAX=1, two groups: no connection carries a second MAIL")
good &= is_(statuses(qid, "deferred"), [],
            "MAILMAX=1, two groups: nothing deferred")
agent.write_conf(relay="[127.0.0.1]:25", extra_text="")
if not good:
    show(res, sink)

# --- 3. soft errors move to the next MX --------------------------------------
if not os.access(dnsserver.UNBOUND, os.X_OK):
    rrtest.skip("unbound is not installed", 37)
    done()

dns = start_dns()
PORT = common_port(["127.0.0.3", "127.0.0.4"])
agent.write_conf(relay="", extra_text="\n[routes]\n* = lookup-mx:"
                 "query=127.0.0.1:%d;port=%d\n" % (dns.port, PORT))


def mx_case(name, first_script, second_script=None):
    """mx_case - twopref.test: MX 10 on 127.0.0.3 with FIRST_SCRIPT, MX 20
    on 127.0.0.4; one run of 3 recipients; (res, first, second, qid)"""
    first = AddrSink("127.0.0.3", PORT, first_script)
    second = AddrSink("127.0.0.4", PORT, second_script or {})
    first.start()
    second.start()
    qid = new_qid()
    rl_ = rcpts(3, "twopref.test")
    res = agent.run(rl_, queue_id=qid, nexthop="batch")
    ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty"
       % name)
    return res, first, second, qid, rl_


SOFT = {
    "greeting 421": {"greeting": "421 4.3.2 mx.test busy, try later"},
    "greeting 554": {"greeting": "554 5.7.1 mx.test does not take mail "
                                 "from you"},
    "EHLO 451": {"rules": [{"cmd": "EHLO",
                            "reply": "451 4.3.0 try again"}]},
    "MAIL 451": {"rules": [{"cmd": "MAIL",
                            "reply": "451 4.3.0 Temporary local problem"}]},
}
for name, script in SOFT.items():
    res, first, second, qid, rl = mx_case(name, script)
    good = is_(res.rc, 0, "%s at the first MX: exit 0" % name)
    good &= is_(second.delivered(), sorted(rl),
                "%s: all delivered once through the second MX" % name)
    good &= is_(first.messages(), [], "%s: nothing at the first MX" % name)
    if not good:
        show(res, first, second)
    first.stop()
    second.stop()

# the last MX too: deferred with its own reply, not a made-up one
mail451 = {"rules": [{"cmd": "MAIL", "reply": "451 4.3.0 Temporary local "
                      "problem"}]}
res, first, second, qid, rl = mx_case("MAIL 451 at both", mail451,
                                      {"rules": [{"cmd": "MAIL",
                                                  "reply": "450 4.7.1 "
                                                  "Sender greylisted"}]})
good = is_(res.rc, 75, "MAIL 4xx at both MX: exit 75")
good &= like(res.out, r"^4\.7\.1 ", "MAIL 4xx at both MX: the last "
             "server's 4.7.1")
good &= is_(len(first.commands("MAIL")), 1, "MAIL 4xx at both MX: first "
            "MX tried once")
good &= is_(len(second.commands("MAIL")), 1, "MAIL 4xx at both MX: "
            "second MX tried once")
good &= ok([l for l in agent.log_lines() if qid in l and "status=deferred"
            in l and "Sender greylisted (in reply to MAIL FROM command)" in l],
           "MAIL 4xx at both MX: deferred with the server's reply")
if not good:
    show(res, first, second)
first.stop()
second.stop()

# a 5xx greeting at the last MX too: deferred (Postfix's default
# smtp_skip_5xx_greeting = yes), the server's text, its status as 4.x.x
g554 = {"greeting": "554 5.7.1 mx.test does not take mail from you"}
res, first, second, qid, rl = mx_case("greeting 554 at both", g554, g554)
good = is_(res.rc, 75, "greeting 554 at both MX: exit 75, not 69")
good &= like(res.out, r"^4\.7\.1 ", "greeting 554 at both MX: 4.7.1")
good &= is_(statuses(qid, "deferred"), sorted(rl),
            "greeting 554 at both MX: all deferred")
good &= is_(statuses(qid, "bounced"), [], "greeting 554 at both MX: "
            "none bounced")
good &= ok([l for l in agent.log_lines() if qid in l and "dsn=4.7.1" in l
            and "refused to talk to me: 554 5.7.1" in l],
           "greeting 554 at both MX: the log line has dsn=4.7.1 and the "
           "server's text")
if not good:
    show(res, first, second)
first.stop()
second.stop()

# a 5xx to HELO (EHLO refused) is no greeting: it still bounces
h554 = {"rules": [{"cmd": "EHLO", "reply": "502 5.5.2 Error: command not "
                   "recognized"},
                  {"cmd": "HELO", "reply": "554 5.7.1 not from you"}]}
res, first, second, qid, rl = mx_case("HELO 554 at both", h554, h554)
good = is_(res.rc, 69, "HELO 554 at both MX: exit 69")
good &= like(res.out, r"^5\.7\.1 .*554 5\.7\.1 not from you \(in reply to "
             r"HELO command\)", "HELO 554: 5.7.1 with the reply")
good &= is_(statuses(qid, "bounced"), sorted(rl), "HELO 554: all bounced")
good &= is_(first.messages() + second.messages(), [],
            "HELO 554: nothing delivered")
if not good:
    show(res, first, second)
first.stop()
second.stop()

# a 5xx MAIL still bounces at the first MX; the second is not asked
res, first, second, qid, rl = mx_case(
    "MAIL 550", {"rules": [{"cmd": "MAIL", "reply": "550 5.7.1 Sender "
                            "rejected"}]})
good = is_(res.rc, 69, "MAIL 550 at the first MX: exit 69")
good &= is_(second.connections(), 0, "MAIL 550: the second MX not asked")
good &= is_(statuses(qid, "bounced"), sorted(rl), "MAIL 550: all bounced")
if not good:
    show(res, first, second)
first.stop()
second.stop()

done()
