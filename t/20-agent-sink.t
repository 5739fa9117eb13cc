#!/usr/bin/env python3
# 20-agent-sink.t - rapidretry-agent against the scripted SMTP server:
# what crossed the wire and what was accepted, per reply script (DESIGN
# §4, §6): 452 between 250s, rapid reply to the first RCPT, 421, a drop
# after the final dot, silence until the deadline, garbage, LIMITS
# RCPTMAX, greylisting (and the journal on the retry).
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
_qid = [0x3A000]

TOO_MANY = "452 4.5.3 Error: too many recipients"


def rcpts(n, domain="d1.test", prefix="r"):
    return ["%s%d@%s" % (prefix, i, domain) for i in range(1, n + 1)]


def run(script, rcpt_list, ag=None, qid=None, msg=None, **kw):
    """run - a fresh sink with SCRIPT, one agent run; (sink, result, qid)."""
    sink = SmtpSink(script)
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    if qid is None:
        _qid[0] += 1
        qid = "%X" % _qid[0]
    ag = ag or agent
    msg = msg or rrtest.sample_message("s@src.test", rcpt_list)
    res = ag.run(rcpt_list, queue_id=qid, nexthop="[127.0.0.1]:%d" % port,
                 message=msg, **kw)
    sink.msg = msg
    ok(rrtest.status_line_ok(res), "one stdout line, stderr empty")
    return sink, res, qid


def show(sink, res):
    diag(repr(res))
    diag(sink.dump())


def statuses(ag, qid, status=None):
    return sorted(r.lower() for q, r, d, s, t in
                  rrtest.agent_status(ag.log_lines(), status=status)
                  if q == qid)


# --- 1. 452 between 250s, pipelined -----------------------------------------
rl = rcpts(4)
sink, res, qid = run({"rules": [{"cmd": "RCPT", "txn": 1, "rcpt": 2,
                                 "reply": TOO_MANY}]}, rl)
good = is_(res.rc, 0, "452 between 250s: exit 0")
good &= like(res.out, r"^2\.0\.0 ", "452 between 250s: 2.0.0")
good &= is_(sink.delivered(), sorted(rl),
            "452 between 250s: every recipient accepted exactly once")
msgs = sink.messages()
good &= is_([m["rcpts"] for m in msgs], [[rl[0], rl[2], rl[3]], [rl[1]]],
            "452 between 250s: 1 3 4 in the first transaction, 2 in the next")
good &= is_(sink.connections(), 1, "452 between 250s: one connection")
good &= ok(sink.pipelined > 0, "452 between 250s: commands were pipelined")
good &= ok(msgs and all(m["body"] == sink.msg for m in msgs),
           "message body arrives unchanged (dot-stuffing round trip)")
good &= is_(statuses(agent, qid, "sent"), sorted(rl),
            "452 between 250s: 4 status=sent log lines")
good &= ok([l for l in agent.log_lines() if re.search(
    r": %s: rapid retry: 1 recipients?, new transaction after "
    r"\"452 4\.5\.3 Error: too many recipients\"" % qid, l)],
    "452 between 250s: the rapid retry is logged")
if not good:
    show(sink, res)

# --- 2. the same without PIPELINING -------------------------------------------
sink, res, qid = run({"ehlo": ["SIZE 10240000", "ENHANCEDSTATUSCODES"],
                      "rules": [{"cmd": "RCPT", "txn": 1, "rcpt": 2,
                                 "reply": TOO_MANY}]}, rl)
good = is_(res.rc, 0, "no PIPELINING: exit 0")
good &= is_(sink.delivered(), sorted(rl),
            "no PIPELINING: every recipient exactly once")
good &= is_(sink.violations, [], "no PIPELINING: the agent did not pipeline")
if not good:
    show(sink, res)

# --- 3. rapid reply to the first RCPT of a transaction -----------------------
rl = rcpts(3)
sink, res, qid = run({"rules": [{"cmd": "RCPT", "rcpt": 1,
                                 "reply": TOO_MANY}]}, rl)
good = is_(res.rc, 75, "rapid at first RCPT: exit 75")
good &= like(res.out, r"^4\.5\.3 ", "rapid at first RCPT: 4.5.3")
good &= is_(sink.delivered(), sorted(rl[1:]),
            "rapid at first RCPT: the others delivered once")
good &= is_(sink.rcpt_count(rl[0]), 1,
            "rapid at first RCPT: that recipient is not retried")
good &= is_(len(sink.commands("MAIL")), 1,
            "rapid at first RCPT: one transaction only")
good &= is_(statuses(agent, qid, "deferred"), [rl[0]],
            "rapid at first RCPT: logged deferred")
if not good:
    show(sink, res)

# --- 4. 421 in mid-transaction -> reconnect ---------------------------------
rl = rcpts(3)
sink, res, qid = run({"rules": [{"cmd": "RCPT", "conn": 1, "rcpt": 2,
                                 "reply": "421 4.7.0 sink.test closing",
                                 "close": True}]}, rl)
good = is_(res.rc, 0, "421 mid-transaction: exit 0")
good &= is_(sink.connections(), 2, "421 mid-transaction: reconnected once")
good &= is_([(m["conn"], sorted(m["rcpts"])) for m in sink.messages()],
            [(2, sorted(rl))],
            "421 mid-transaction: all delivered on the second connection")
if not good:
    show(sink, res)

# --- 5. connection dropped after DATA's final dot ---------------------------
rl = rcpts(3)
sink, res, qid = run({"rules": [{"cmd": "DOT", "action": "drop"}]}, rl)
good = is_(res.rc, 75, "drop after dot: exit 75")
good &= like(res.out, r"^4\.\d\.\d ", "drop after dot: 4.x.x")
good &= is_(len(sink.commands("MAIL")), 1,
            "drop after dot: not retried at once (might be delivered)")
good &= is_(sink.connections(), 1, "drop after dot: no reconnect")
good &= is_(statuses(agent, qid, "deferred"), sorted(rl),
            "drop after dot: all three logged deferred")
if not good:
    show(sink, res)

# --- 6. silence until the deadline ------------------------------------------
# the agent's shortest allowed deadline is 10s
fast = rrtest.Agent(name="agent-deadline", deadline="10s",
                    timeouts={k: "60s" for k in rrtest.TIMEOUT_KEYS})
rl = rcpts(2)
sink, res, qid = run({"rules": [{"cmd": "MAIL", "action": "silent"}]}, rl,
                     ag=fast, timeout=40)
good = is_(res.rc, 75, "silence: exit 75")
good &= like(res.out, r"^4\.\d\.\d ", "silence: 4.x.x")
good &= ok(res.elapsed < 10 + 10,  # far below the 60 s timeouts
           "silence: ended by the deadline (%.1fs, deadline 10s)"
           % res.elapsed)
good &= ok(res.elapsed >= 9.5, "silence: waited for the deadline")
good &= is_(statuses(fast, qid, "deferred"), sorted(rl),
            "silence: both logged deferred")
if not good:
    show(sink, res)

# --- 7. garbage reply -------------------------------------------------------
rl = rcpts(2)
sink, res, qid = run({"rules": [{"cmd": "MAIL",
                                 "raw": "hello? this is no SMTP reply"}]}, rl)
good = is_(res.rc, 75, "garbage: exit 75")
good &= like(res.out, r"^4\.\d\.\d ", "garbage: 4.x.x")
good &= is_(sink.messages(), [], "garbage: nothing delivered")
good &= is_(statuses(agent, qid, "deferred"), sorted(rl),
            "garbage: both logged deferred")
if not good:
    show(sink, res)

# --- 8. LIMITS RCPTMAX=2 honoured from the first transaction ----------------
rl = rcpts(5)
sink, res, qid = run({"ehlo": ["PIPELINING", "ENHANCEDSTATUSCODES",
                               "LIMITS RCPTMAX=2"], "rcpt_max": 2}, rl)
good = is_(res.rc, 0, "RCPTMAX=2: exit 0")
good &= is_(sink.delivered(), sorted(rl), "RCPTMAX=2: all five exactly once")
good &= is_([len(r) for c, r in sink.transactions()], [2, 2, 1],
            "RCPTMAX=2: 2 + 2 + 1 RCPTs, from the first transaction on")
good &= is_([e["line"] for e in sink.replies() if e["line"][:3] == "452"],
            [], "RCPTMAX=2: no 452 ever sent")
good &= is_(sink.connections(), 1, "RCPTMAX=2: one connection")
if not good:
    show(sink, res)

# --- 9. greylisting at RCPT, then the retry run (journal) -------------------
rl = rcpts(3)
grey = ("450 4.2.0 <%s>: Recipient address rejected: Greylisted for 300 "
        "seconds" % rl[1])
script = {"rules": [{"cmd": "RCPT", "addr": rl[1], "reply": grey,
                     "times": 1}]}
sink, res, qid = run(script, rl)
good = is_(res.rc, 75, "greylisted: exit 75")
good &= like(res.out, r"^4\.2\.0 .*Greylisted", "greylisted: 4.2.0 + text")
good &= is_(sink.delivered(), [rl[0], rl[2]],
            "greylisted: the others delivered")
good &= is_(sink.rcpt_count(rl[1]), 1, "greylisted: not retried at once")
dl = [t for q, r, d, s, t in rrtest.agent_status(
    agent.log_lines(), status="deferred", rcpt=rl[1]) if q == qid]
good &= ok(dl and "Greylisted for 300 seconds" in dl[0],
           "greylisted: logged deferred with the server's text")
if not good:
    show(sink, res)

# the retry: Postfix runs the same argv again; the journal skips the
# recipients delivered in the first run (same queue id, same message)
sink2, res, _ = run({}, rl, qid=qid, msg=sink.msg)
good = is_(res.rc, 0, "retry run: exit 0")
good &= is_(sink2.delivered(), [rl[1]], "retry run: only the deferred one")
good &= is_(sink2.rcpt_count(rl[0]) + sink2.rcpt_count(rl[2]), 0,
            "retry run: the delivered ones never reach the server again")
if not good:
    show(sink2, res)


# --- 10. "550 5.5.3 Too many recipients": x.5.3 splits, whatever the code ---
# (RFC 3463: the rest goes in another delivery); refusing the very first
# RCPT it can only defer, and the logged class follows that outcome
rl = rcpts(5)
FIVE53 = "550 5.5.3 Too many recipients"
sink, res, qid = run({"rules": [{"cmd": "RCPT", "rcpt": "3+",
                                 "reply": FIVE53}]}, rl)
good = is_(res.rc, 0, "550 5.5.3 after two: exit 0")
good &= is_(sink.delivered(), sorted(rl),
            "550 5.5.3 after two: every recipient exactly once")
good &= is_([len(m["rcpts"]) for m in sink.messages()], [2, 2, 1],
            "550 5.5.3 after two: transactions of 2, 2, 1 (limit learned)")
good &= is_(sink.connections(), 1, "550 5.5.3 after two: one connection")
if not good:
    show(sink, res)
rl = rcpts(2)
sink, res, qid = run({"rules": [{"cmd": "RCPT", "rcpt": 1,
                                 "reply": FIVE53}]}, rl)
good = is_(res.rc, 75, "550 5.5.3 at the first RCPT: deferred, not bounced")
good &= like(res.out, r"^4\.5\.3 ", "550 5.5.3 at the first RCPT: 4.5.3")
good &= is_(sink.delivered(), [rl[1]], "550 5.5.3 at the first RCPT: the "
            "second recipient delivered")
dl = [(d, t) for q, r, d, s, t in rrtest.agent_status(
    agent.log_lines(), status="deferred", rcpt=rl[0]) if q == qid]
good &= ok(dl and dl[0][0] == "4.5.3" and FIVE53 in dl[0][1],
           "550 5.5.3 at the first RCPT: logged dsn=4.5.3, status=deferred "
           "with the server's text: %r" % dl)
if not good:
    show(sink, res)

done()
