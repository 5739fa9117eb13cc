#!/usr/bin/env python3
# 29-agent-prdr.t - rapidretry-agent's PRDR client (draft-hall-prdr-00)
# against the scripted server:
#  - MAIL FROM carries PRDR when EHLO lists it and the transaction has more
#    than one recipient (not with one, not with [smtp] prdr = no);
#  - after the 353 each recipient takes its own reply's class when the
#    final reply is 2xx (sent / bounced / deferred), a 4xx final reply
#    defers and a 5xx bounces every one, a plain reply instead of the 353
#    speaks for all, a drop among the replies defers all (unsure);
#  - the journal records only what was taken: the rerun of the same batch
#    delivers the deferred ones, never the sent or bounced ones again;
#  - RapidRetry at RCPT time works as before.
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

agent = rrtest.Agent(name="agent29", deadline="30s")
EHLO = ["PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES",
        "PRDR"]
RL = ["r%d@d1.test" % i for i in range(1, 5)]
_qid = [0x29A000]


def new_qid():
    _qid[0] += 1
    return "%X" % _qid[0]


def statuses(qid):
    """statuses - {rcpt: (dsn, status)} of QID's log lines, last wins"""
    return {r.lower(): (d, s) for q, r, d, s, t in
            rrtest.agent_status(agent.log_lines()) if q == qid}


def sink_for(rules, ehlo=EHLO, **extra):
    script = {"ehlo": ehlo, "rules": rules}
    script.update(extra)
    sink = SmtpSink(script)
    sink.start()
    rrtest.at_cleanup(sink.stop)
    return sink


_msgs = {}


def run(sink, rl, qid, name):
    """run - one agent run; a rerun of QID sends the same message"""
    msg = _msgs.setdefault(qid, rrtest.sample_message("s@src.test", rl))
    res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % sink.port,
                    message=msg)
    ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty"
       % name)
    return res


def mails(sink):
    return [e["line"] for e in sink.commands("MAIL")]


def show(res, sink):
    diag(repr(res))
    diag(sink.dump())
    diag("\n".join(agent.log_lines()[-12:]))


# --- 1. own replies 250 / 550 / 450 / 250, final 250 ------------------------
sink = sink_for([
    {"cmd": "PRDR", "addr": RL[1], "reply": "550 5.7.1 content refused "
     "for this recipient"},
    {"cmd": "PRDR", "addr": RL[2], "reply": "450 4.7.1 try this one later",
     "times": 1},
])
qid = new_qid()
res = run(sink, RL, qid, "per-recipient")
st = statuses(qid)
good = ok(mails(sink) and mails(sink)[0].endswith(" PRDR"),
          "per-recipient: MAIL FROM carries PRDR")
good &= is_(sink.transactions() and len(sink.transactions()), 1,
            "per-recipient: one transaction")
good &= is_(sink.delivered(), [RL[0], RL[3]],
            "per-recipient: the server took r1 and r4")
good &= is_(st.get(RL[0]), ("2.0.0", "sent"), "per-recipient: r1 sent")
good &= is_(st.get(RL[1]), ("5.7.1", "bounced"),
            "per-recipient: r2 bounced with its own 5.7.1")
good &= is_(st.get(RL[2]), ("4.7.1", "deferred"),
            "per-recipient: r3 deferred with its own 4.7.1")
good &= is_(st.get(RL[3]), ("2.0.0", "sent"), "per-recipient: r4 sent")
good &= is_(res.rc, 75, "per-recipient: exit 75 (one is deferred)")
good &= ok([l for l in agent.log_lines() if qid in l and "to=<%s>" % RL[1]
            in l and "content refused for this recipient (in reply to end "
            "of DATA command)" in l],
           "per-recipient: r2's log line has its own reply")
if not good:
    show(res, sink)
# Postfix runs the same batch again: the journal leaves only r3
res = run(sink, RL, qid, "per-recipient rerun")
good = is_(sink.delivered(), [RL[0], RL[2], RL[3]],
           "per-recipient rerun: r3 delivered, r1 r4 not twice, r2 not again")
good &= is_(res.rc, 0, "per-recipient rerun: exit 0")
good &= ok(" PRDR" not in mails(sink)[-1],
           "per-recipient rerun: one recipient, MAIL without PRDR")
if not good:
    show(res, sink)
sink.stop()

# --- 2. the final reply decides for all when it is not 2xx -----------------
for final, want in (("451 4.3.0 try the message later", ("4.3.0", "deferred")),
                    ("554 5.7.1 message refused", ("5.7.1", "bounced"))):
    name = "final %s" % final[:3]
    sink = sink_for([
        {"cmd": "PRDR", "addr": RL[1], "reply": "550 5.1.1 no such user"},
        {"cmd": "DOT", "reply": final},
    ])
    qid = new_qid()
    res = run(sink, RL, qid, name)
    st = statuses(qid)
    good = is_(sink.delivered(), [], "%s: nothing taken" % name)
    good &= is_(sorted(st.values()), [want] * 4,
                "%s: every recipient %s %s" % (name, want[1], want[0]))
    good &= is_(res.rc, 75 if final[0] == "4" else 69,
                "%s: exit code" % name)
    if not good:
        show(res, sink)
    sink.stop()

# --- 3. a plain reply instead of the 353 speaks for everyone --------------
for final, want, taken in (("250 2.0.0 Ok: queued", ("2.0.0", "sent"), RL),
                           ("550 5.7.1 refused", ("5.7.1", "bounced"), [])):
    name = "plain %s instead of 353" % final[:3]
    sink = sink_for([{"cmd": "PRDR353", "action": "skip"},
                     {"cmd": "DOT", "reply": final}])
    qid = new_qid()
    res = run(sink, RL, qid, name)
    good = is_(sink.delivered(), sorted(taken), "%s: what the server took"
               % name)
    good &= is_(sorted(statuses(qid).values()), [want] * 4,
                "%s: every recipient %s" % (name, want[1]))
    if not good:
        show(res, sink)
    sink.stop()

# --- 4. a drop between the per-recipient replies ---------------------------
sink = sink_for([{"cmd": "PRDR", "rcpt": 3, "action": "drop", "times": 1}])
qid = new_qid()
res = run(sink, RL, qid, "drop")
good = is_(sink.delivered(), [], "drop: nothing taken")
good &= is_(sorted(statuses(qid).values()), [("4.4.2", "deferred")] * 4,
            "drop: every recipient deferred 4.4.2 (no final reply)")
good &= is_(res.rc, 75, "drop: exit 75")
if not good:
    show(res, sink)
res = run(sink, RL, qid, "drop rerun")
good = is_(sink.delivered(), RL, "drop rerun: each delivered once")
good &= is_(res.rc, 0, "drop rerun: exit 0")
if not good:
    show(res, sink)
sink.stop()

# --- 4b. a 421, garbage, a stall among the per-recipient replies ----------
# nothing is final without the final reply: all deferred, nothing taken;
# the stall ends at data_done_timeout (2 s here, the others 10 s)
agent.write_conf(timeouts={"data_done_timeout": "2s"})
for name, rule in (("421", {"reply": "421 4.3.2 shutting down",
                            "close": True}),
                   ("garbage", {"raw": "garbage \x00 here"}),
                   ("stall", {"action": "silent"})):
    rule.update({"cmd": "PRDR", "rcpt": 2})
    sink = sink_for([rule])
    qid = new_qid()
    res = run(sink, RL, qid, name)
    # (after garbage or a stall the scripted server goes on and keeps the
    # message: the agent cannot know, so deferred, as after a lost dot)
    good = name != "421" or is_(sink.delivered(), [],
                                "421 among the replies: nothing taken")
    good &= is_(sorted(s for d, s in statuses(qid).values()),
                ["deferred"] * 4, "%s among the replies: all deferred"
                % name)
    good &= is_(res.rc, 75, "%s among the replies: exit 75" % name)
    if name == "stall":
        good &= ok(2 <= res.elapsed < 8, "stall: ended by data_done_timeout "
                   "(%.1f s)" % res.elapsed)
    if not good:
        show(res, sink)
    sink.stop()
agent.write_conf(timeouts={})

# --- 4c. a RCPT refused between accepted ones: replies only for these -----
sink = sink_for([{"cmd": "RCPT", "addr": RL[1], "reply": "550 5.1.1 no "
                  "such user"},
                 {"cmd": "PRDR", "addr": RL[2], "reply": "550 5.7.1 after "
                  "the data"}])
qid = new_qid()
res = run(sink, RL, qid, "RCPT refused")
st = statuses(qid)
good = is_([e["line"][:3] for e in sink.transcript() if e["dir"] == "s"
            and e["conn"] == 1][-6:-1], ["353", "250", "550", "250", "250"],
           "RCPT refused: 353, three per-recipient replies, the final")
good &= is_(sink.delivered(), [RL[0], RL[3]], "RCPT refused: r1 r4 taken")
good &= is_(st.get(RL[1]), ("5.1.1", "bounced"), "RCPT refused: r2 5.1.1")
good &= is_(st.get(RL[2]), ("5.7.1", "bounced"), "RCPT refused: r3 5.7.1")
good &= is_([st.get(RL[0]), st.get(RL[3])], [("2.0.0", "sent")] * 2,
            "RCPT refused: r1 r4 sent")
if not good:
    show(res, sink)
sink.stop()

# --- 5. no PRDR with one recipient, with prdr = no, without the keyword ----
for name, rl, conf, ehlo in (("one recipient", RL[:1], "", EHLO),
                             ("prdr = no", RL, "prdr = no", EHLO),
                             ("not offered", RL, "", EHLO[:-1])):
    agent.write_conf(smtp_extra={"prdr": "no"} if conf else {})
    sink = sink_for([], ehlo=ehlo)
    qid = new_qid()
    res = run(sink, rl, qid, name)
    good = ok(mails(sink) and " PRDR" not in mails(sink)[0],
              "%s: MAIL FROM without PRDR" % name)
    good &= is_(sink.delivered(), sorted(rl), "%s: delivered" % name)
    good &= is_([e["line"] for e in sink.transcript() if e["dir"] == "s"
                 and e["line"].startswith("353")], [],
                "%s: no 353" % name)
    if not good:
        show(res, sink)
    sink.stop()
agent.write_conf(smtp_extra={})

# --- 6. RapidRetry at RCPT, PRDR after the data ----------------------------
sink = sink_for([{"cmd": "PRDR", "addr": RL[1],
                  "reply": "550 5.7.1 refused after the data"}], rcpt_max=2)
qid = new_qid()
res = run(sink, RL, qid, "rapid + PRDR")
st = statuses(qid)
good = is_([len(t[1]) for t in sink.transactions()], [4, 2],
           "rapid + PRDR: 4 RCPTs (2 taken), then the other 2")
good &= ok(all(m.endswith(" PRDR") for m in mails(sink)),
           "rapid + PRDR: both MAIL commands carry PRDR")
good &= is_(sink.delivered(), [RL[0], RL[2], RL[3]],
            "rapid + PRDR: r1 r3 r4 taken")
good &= is_(st.get(RL[1]), ("5.7.1", "bounced"), "rapid + PRDR: r2 bounced")
good &= is_(res.rc, 0, "rapid + PRDR: exit 0 (the DSN tells the sender)")
if not good:
    show(res, sink)
sink.stop()

done()
