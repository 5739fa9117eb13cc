#!/usr/bin/env python3
# 58-lmtp-same-message.t - the same message handed to two LMTP-mode
# agents at once (DESIGN §9): Postfix retries a queue file on a second
# lmtp connection while the first agent still delivers it to a server
# that stalls. The second agent must defer (451 4.3.0) the recipients the
# first one holds, with the queue id from XFORWARD IDENT and with the key
# made from the sender and digest alike, and never send them again; the
# retry after the first is done gets 250 from the journal. Recipients the
# first does not hold (Postfix splits big recipient lists) go out at
# once, and a first agent killed in the middle holds nothing any more.
import os
import signal
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, done
from smtpsink import SmtpSink
from lmtpclient import LmtpAgent, stuff

rrtest.require_root()
rrtest.agent_binary()

sink = SmtpSink({})
port = sink.start()
rrtest.at_cleanup(sink.stop)
agent = rrtest.Agent(name="agent58", relay="[127.0.0.1]:%d" % port,
                     timeouts={"data_done_timeout": "30s"})
STALL = 3


def session():
    s = LmtpAgent(agent, timeout=60)
    s.reply()
    s.cmd("LHLO postfix.test")
    return s


def send(s, rcpts, msg, ident):
    """send - one transaction pipelined with its dot, nothing read"""
    cmds = ["XFORWARD IDENT=%s" % ident] if ident else []
    cmds += ["MAIL FROM:<s@src.test>"] + ["RCPT TO:<%s>" % r for r in rcpts]
    s.send("".join(c + "\r\n" for c in cmds + ["DATA"]))
    s.send(stuff(msg) + ".\r\n")


def finals(s, rcpts, ident):
    """finals - the replies after the dot of what send() sent"""
    for _ in range(1 + (1 if ident else 0) + len(rcpts) + 1):
        s.reply()
    return s.replies(len(rcpts))


def dots():
    return len([e for e in sink.commands() if e["line"] == "."])


def stalled_first(rcpts, msg, ident, rule):
    """stalled_first - the first agent's transaction, until its final
    dot has reached the server that then stalls per RULE"""
    sink.set_script({"rules": [dict(rule, cmd="DOT", times=1)]})
    before = dots()
    a = session()
    send(a, rcpts, msg, ident)
    ok(rrtest.wait_until(lambda: dots() > before, timeout=30),
       "the first agent's dot reached the stalling server")
    return a


for n, ident in enumerate(("58A0001", None)):
    what = "IDENT %s" % ident if ident else "no IDENT (sender + digest)"
    rl = ["c%da@d1.test" % n, "c%db@d2.test" % n]
    msg = rrtest.sample_message("s@src.test", rl)
    # --- 1. the retry while the first still delivers: 451, no copy -----------
    a = stalled_first(rl, msg, ident, {"delay": STALL})
    b = session()
    mail, rr, data, fb = b.transaction("s@src.test", rl, msg, ident=ident)
    is_(len(fb), 2, "%s: the second agent answers each recipient" % what)
    ok(all(l.startswith("451 4.3.0 <%s>: another delivery" % r)
           for r, l in zip(rl, fb)),
       "%s: ...with 451 4.3.0, the first agent holds them: %r"
       % (what, fb[:1]))
    b.cmd("QUIT")
    fa = finals(a, rl, ident)
    ok(len(fa) == 2 and all(l.startswith("250 ") for l in fa),
       "%s: the first agent's own replies are 250: %r" % (what, fa[:1]))
    a.cmd("QUIT")
    is_([sink.delivered().count(r) for r in rl], [1, 1],
        "%s: each recipient taken once" % what)
    # --- 2. Postfix's next retry: 250 from the journal ------------------------
    c = session()
    mail, rr, data, fc = c.transaction("s@src.test", rl, msg, ident=ident)
    ok(len(fc) == 2 and all("earlier attempt (journal)" in l for l in fc),
       "%s: the retry after it: 250 from the journal: %r" % (what, fc[:1]))
    c.cmd("QUIT")
    is_([sink.delivered().count(r) for r in rl], [1, 1],
        "%s: still once each" % what)

# --- 3. the same queue id, other recipients (a split list): at once ----------
rl = ["split1@d1.test", "split2@d1.test"]
msg = rrtest.sample_message("s@src.test", rl)
a = stalled_first(rl[:1], msg, "58B0001", {"delay": STALL})
b = session()
mail, rr, data, fb = b.transaction("s@src.test", rl[1:], msg,
                                   ident="58B0001")
like(" ".join(fb), r"^250 2\.0\.0 <split2@d1\.test>: 127\.0\.0\.1",
     "a recipient the first agent does not hold is delivered at once")
fa = finals(a, rl[:1], "58B0001")
like(" ".join(fa), r"^250 ", "...and the first agent's own one too")
is_([sink.delivered().count(r) for r in rl], [1, 1], "each once")

# --- 4. a first agent killed in the middle holds nothing ---------------------
rl = ["killed@d1.test"]
msg = rrtest.sample_message("s@src.test", rl)
# the stalled dot never gets a reply and the message is not taken
a = stalled_first(rl, msg, "58C0001", {"action": "silent"})
a.proc.send_signal(signal.SIGKILL)
a.wait()
sink.set_script({})
b = session()
mail, rr, data, fb = b.transaction("s@src.test", rl, msg, ident="58C0001")
like(" ".join(fb), r"^250 2\.0\.0 <killed@d1\.test>: 127\.0\.0\.1",
     "after SIGKILL of the first agent the retry delivers (in flight once: "
     "send again), nothing held by the dead process")
is_(sink.delivered().count(rl[0]), 1, "taken once")
done()
