#!/usr/bin/env python3
# 25-agent-early-reply.t - a server that replies in the middle of the
# message data (it took the rest of the text for commands) must never make
# the agent report a delivery: the reply came before the final dot, so it
# is not the reply to it (RFC 5321 §4.1.1.4). Found by the fault campaign
# (premature-reply): the agent read the early "250" after its dot and
# logged every recipient sent while the server had queued nothing.
#
# The agent looks for input that no command asked for just before it
# sends the final dot, and with PIPELINING sends a RSET in the same write
# as the dot: a server that took the rest of the message for commands
# answers those lines (502) before the RSET, so a reply in the middle of
# the data can no longer pass for the reply to the dot, however the two
# race. Small messages (the reply races the dot) and large ones (it comes
# while the agent still writes) alike. Without PIPELINING the RSET follows
# the dot's reply (a round trip more), with the same check.
import os
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

agent = rrtest.Agent(name="agent25", deadline="30s")
# 3 MB in lines of 1,000 octets: the server reads (and answers 502 to)
# each line, so the agent's writing waits on it
BODY = "".join("line %05d %s\n" % (i, "x" * 988) for i in range(1, 3001))


def statuses(qid):
    return sorted((r.lower(), s) for q, r, d, s, t in
                  rrtest.agent_status(agent.log_lines()) if q == qid)


SMALL = "".join("line %d of the message\n" % i for i in range(1, 6))
for body, after, rl, qid in (
        (BODY, 1, ["e1@d1.test"], "25E1"),
        (BODY, 300, ["e1@d1.test", "e2@d1.test"], "25E2"),
        (BODY, 0, ["e1@d1.test", "e2@d1.test", "e3@d1.test"], "25E3"),
        (SMALL, 2, ["e1@d1.test", "e2@d1.test"], "25E4"),
        (SMALL, 6, ["e1@d1.test"], "25E5"),
        (SMALL, 0, ["e1@d1.test"], "25E6"),
        # without PIPELINING (EHLO refused, HELO): the RSET follows the
        # dot's reply (the campaign's seed 203478: the early reply raced
        # the dot, and no RSET was behind it)
        (SMALL, 4, ["e1@d1.test", "e2@d1.test", "e3@d1.test"], "25N1"),
        (SMALL, 0, ["e1@d1.test"], "25N2"),
        (BODY, 300, ["e1@d1.test", "e2@d1.test"], "25N3")):
    rules = [{"cmd": "BODY", "after": after, "raw": ["250 2.0.0 early"]}]
    if qid.startswith("25N"):
        rules.append({"cmd": "EHLO", "reply": "502 5.5.2 Error: command "
                      "not recognized"})
    sink = SmtpSink({"rules": rules})
    sink.start()
    msg = rrtest.sample_message("s@src.test", rl, body=body)
    res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % sink.port,
                    message=msg)
    ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty" % qid)
    is_(sink.delivered(), [], "%s: the server queued nothing" % qid)
    is_([s for r, s in statuses(qid) if s == "sent"], [],
        "%s: no recipient logged sent on a reply before the dot" % qid)
    is_(res.rc, 75, "%s: exit 75, deferred" % qid)
    like(res.out, r"^4\.", "%s: a 4.x.x status line" % qid) or diag(res)
    # Postfix's retry, against a server that behaves: each one arrives once
    sink.set_script({} if qid.startswith("25E") else {"rules": rules[1:]})
    res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % sink.port,
                    message=msg)
    is_(res.rc, 0, "%s: the retry ends with 0" % qid) or diag(res)
    is_(sink.delivered(), sorted(rl), "%s: each recipient once" % qid) or \
        diag(sink.dump())
    cmds = [e["line"] for e in sink.transcript()
            if e["dir"] == "c" and e["conn"] == sink.connections()]
    ok("RSET" in cmds and cmds[cmds.index("RSET") - 1] == ".",
       "%s: the RSET went right behind the final dot" % qid)
    if qid.startswith("25N"):
        is_([c.split(" ")[0] for c in cmds[:2]], ["EHLO", "HELO"],
            "%s: EHLO refused, HELO: no PIPELINING" % qid)
    sink.stop()

# Without PIPELINING, the RSET after the dot's reply changes nothing else:
# a server that closes after the dot's 250 (25P1) or answers the RSET
# with 421 (25P2: the rest goes over a new connection) has the message;
# the RSET is no transaction for LIMITS MAILMAX (25P3: 2 per connection);
# no RSET after PRDR's 353 and per-recipient replies (25P4).
PLAIN = ["ENHANCEDSTATUSCODES"]
R5 = ["p%d@d1.test" % i for i in range(1, 6)]
for qid, script, rl, conns, tx_per_conn in (
        ("25P1", {"ehlo": PLAIN, "rules": [{"cmd": "DOT", "close": True,
                                             "reply": "250 2.0.0 queued"}]},
         ["p1@d1.test"], 1, [1]),
        ("25P2", {"ehlo": PLAIN, "rcpt_max": 2,
                  "rules": [{"cmd": "RSET", "close": True,
                             "reply": "421 4.3.2 closing"}]},
         R5, 3, [1, 1, 1]),
        ("25P3", {"ehlo": PLAIN + ["LIMITS MAILMAX=2"], "rcpt_max": 2},
         R5, 2, [2, 1]),
        ("25P4", {"ehlo": PLAIN + ["PRDR"]}, ["p1@d1.test", "p2@d1.test"],
         1, [1])):
    sink = SmtpSink(script)
    sink.start()
    res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % sink.port)
    good = is_(res.rc, 0, "%s: exit 0" % qid)
    good &= is_(statuses(qid), sorted((r, "sent") for r in rl),
                "%s: every recipient sent" % qid)
    good &= is_(sorted(sink.delivered()), sorted(rl),
                "%s: each arrived once" % qid)
    per = [[e["line"].split(" ")[0] for e in sink.transcript()
            if e["dir"] == "c" and e["conn"] == c]
           for c in range(1, sink.connections() + 1)]
    good &= is_([p.count("MAIL") for p in per], tx_per_conn,
                "%s: %d connection(s), transactions per connection %s"
                % (qid, conns, tx_per_conn))
    after_dot = [p[i + 1] for p in per for i, w in enumerate(p)
                 if w == "." and i + 1 < len(p)]
    if qid == "25P4":
        good &= ok("RSET" not in per[0], "25P4: no RSET after PRDR's "
                   "replies")
    else:
        good &= ok(all(w == "RSET" for w in after_dot),
                   "%s: a RSET after each dot (%s)" % (qid, after_dot))
    if not good:
        diag(repr(res))
        diag(repr(per))
    sink.stop()

done()
