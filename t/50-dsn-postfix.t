#!/usr/bin/env python3
# 50-dsn-postfix.t - the agent's own DSNs through a real sender Postfix
# (DESIGN §7): sender Postfix -> pipe(8) -> rapidretry-agent -> scripted
# receiver. A 550 for one recipient: the others delivered once, exactly
# one DSN naming only the failed one, queue empty, a rerun of the same
# queue id sends no second DSN. Deferred in run 1, bounced in run 2: one
# DSN for it only. Null sender: no DSN. Every recipient bounced: exit 69
# and Postfix's own bounce.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink
from dsnmail import DsnSender, dsn_parts

rrtest.require_root()
rrtest.agent_binary()

REJECT = "550 5.1.1 <bad@d1.test>: Recipient address rejected: User unknown"
SENDER = "alice@src.test"

sink = SmtpSink({"rules": [
    {"cmd": "RCPT", "addr": "bad@d1.test", "reply": REJECT},
    # deferred once, then bounced (case 2)
    {"cmd": "RCPT", "addr": "late@d1.test", "times": 1,
     "reply": "450 4.2.0 <late@d1.test>: Greylisted, try again"},
    {"cmd": "RCPT", "addr": "late@d1.test",
     "reply": "550 5.1.1 <late@d1.test>: User unknown, now for good"},
    {"cmd": "RCPT", "addr_re": r"^gone\d@", "reply":
     "550 5.1.1 Mailbox gone"},
]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
snd = DsnSender("snd", port, agent_extra_text="[log]\ntranscript = yes\n")
snd.start()


def wait_statuses(qid, n, since=0):
    return rrtest.wait_until(lambda: len(snd.statuses(qid, since)) >= n
                             and snd.statuses(qid, since), 45,
                             what="%d statuses of %s" % (n, qid)) or []


# --- 1. one 550 among 250s: exit 0, one DSN, rerun sends none ------------
rc1 = ["a@d1.test", "bad@d1.test", "c@d1.test"]
qid = snd.submit(SENDER, rc1)
ok(qid, "case 1 queued: %s" % qid)
st = wait_statuses(qid, 3)
is_(sorted(s for r, d, s, t in st), ["sent"] * 3,
    "case 1: pipe(8) saw exit 0 (all three status=sent at Postfix)")
like(st[0][3] if st else "", r"DSN sent to the sender",
     "case 1: the status text says a DSN was sent")
is_(sink.delivered(), ["a@d1.test", "c@d1.test"],
    "case 1: the two good recipients were delivered, once each")
box = rrtest.wait_until(lambda: snd.mailbox(), 20, what="the DSN") or []
rrtest.wait_until(snd.queue_empty, 20, what="empty queue")
is_(len(box), 1, "case 1: exactly one message in the sender's mailbox")
p = dsn_parts(box[0]) if box else None
ok(p is not None, "case 1: it is a multipart/report")
if p:
    blocks, human, third = p
    is_([b.get("final-recipient") for b in blocks],
        ["rfc822; bad@d1.test"], "case 1: it names only bad@d1.test")
    is_(blocks[0].get("action"), "failed", "case 1: Action: failed")
    is_(blocks[0].get("status"), "5.1.1", "case 1: Status: 5.1.1")
    is_(blocks[0].get("diagnostic-code"), "smtp; " + REJECT,
        "case 1: Diagnostic-Code carries the server's 550 text")
    like(blocks[0].get("remote-mta", ""), r"^dns; ",
         "case 1: Remote-MTA is given")
    # long lines of the text part are folded (RFC 5322 §2.1.1): unfold
    like(re.sub(r"\n\s+", " ", human), re.escape(REJECT),
         "case 1: the text part quotes the reply")
    is_(third, "text/rfc822-headers", "case 1: original headers returned")
    per_msg = box[0].get_payload()[1].get_payload()[0]
    like(per_msg.get("Arrival-Date", ""),
         r"^\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}",
         "case 1: Arrival-Date from the Received: field of the queue id")
    is_(box[0]["To"], "<%s>" % SENDER, "case 1: addressed to the sender")
    like(box[0]["Return-Path"] or "", r"^<>$",
         "case 1: the DSN has the null envelope sender")
    diag("---- the DSN as delivered ----")
    diag(box[0].as_string())
ok(snd.queue_empty(), "case 1: the sender's queue is empty")

# the same queue id again, with the exact stdin pipe(8) gave (as the
# sink received it): everything is final in the journal, no second DSN
body = sink.messages()[0]["body"]
env = snd.agent.env()
env["MAIL_CONFIG"] = snd.etc
mark = len(snd.agent.log_lines())
res = rrtest.run_as_user([snd.agent.binary, "-c", snd.agent.conf, "-i", qid,
                          "-n", "[127.0.0.1]:%d" % port, "-f", SENDER,
                          "--"] + rc1, body, env, cwd=snd.agent.dir)
is_(res.rc, 0, "rerun of %s: exit 0" % qid)
new = snd.agent.log_lines()[mark:]
is_(len([l for l in new if "skipped" in l]), 3,
    "rerun: all three skipped as final in an earlier run")
ok(not [l for l in new if "notification sent" in l],
   "rerun: no second DSN submitted")
is_(sink.delivered(), ["a@d1.test", "c@d1.test"],
    "rerun: nobody delivered twice")
is_(os.listdir(os.path.join(snd.queue, "maildrop")), [],
    "rerun: nothing waiting in maildrop")
is_(len(snd.mailbox()), 1, "rerun: still one message in the mailbox")

# --- 2. deferred in run 1, bounced in run 2 ------------------------------
rc2 = ["d@d1.test", "late@d1.test"]
n_box = len(snd.mailbox())
m2 = snd.mark()
q2 = snd.submit(SENDER, rc2)
st = wait_statuses(q2, 2, m2)
is_(sorted(s for r, d, s, t in st), ["deferred", "deferred"],
    "case 2, run 1: exit 75, Postfix defers the batch")
like(st[0][1] if st else "", r"^4\.2\.0$", "case 2, run 1: the T's 4.2.0")
is_(len(snd.mailbox()), n_box, "case 2, run 1: no DSN yet")
m3 = snd.mark()
snd.flush()
st = wait_statuses(q2, 2, m3)
is_(sorted(s for r, d, s, t in st), ["sent", "sent"],
    "case 2, run 2: exit 0 (d earlier delivered, late bounced now)")
box = rrtest.wait_until(lambda: len(snd.mailbox()) > n_box
                        and snd.mailbox(), 20, what="case 2 DSN") or []
rrtest.wait_until(snd.queue_empty, 20, what="empty queue")
is_(len(box), n_box + 1, "case 2: exactly one more message")
p = dsn_parts(box[-1]) if len(box) > n_box else None
ok(p and [b.get("final-recipient") for b in p[0]]
   == ["rfc822; late@d1.test"], "case 2: the DSN names only late@d1.test")
like(p[0][0].get("diagnostic-code", "") if p else "", r"now for good",
     "case 2: with run 2's 550 text")
is_(sink.rcpt_count("d@d1.test"), 1,
    "case 2: d@d1.test was not contacted again in run 2")
ok(not [m for m in box if m["X-Postfix-Queue-ID"] or
        "X-Postfix-Queue-ID" in m.as_string()],
   "case 2: no bounce from Postfix itself")

# --- 3. null sender: no DSN, logged ---------------------------------------
n_box = len(snd.mailbox())
m4 = snd.mark()
q3 = snd.submit("", ["e@d1.test", "gone1@d1.test"])
st = wait_statuses(q3, 2, m4)
is_(sorted(s for r, d, s, t in st), ["sent", "sent"],
    "case 3: null sender, one bounced: exit 0")
ok([l for l in snd.agent.log_lines() if q3 in l and "null sender" in l],
   "case 3: the agent logs that no DSN goes to a null sender")
rrtest.wait_until(snd.queue_empty, 20, what="empty queue")
is_(len(snd.mailbox()), n_box, "case 3: no DSN in the mailbox")

# --- 4. every recipient bounced: 69, Postfix bounces -----------------------
m5 = snd.mark()
q4 = snd.submit(SENDER, ["gone2@d1.test", "gone3@d1.test"])
st = wait_statuses(q4, 2, m5)
is_(sorted(s for r, d, s, t in st), ["bounced", "bounced"],
    "case 4: all bounced: Postfix bounces the batch (exit 69)")
box = rrtest.wait_until(lambda: len(snd.mailbox()) > n_box
                        and snd.mailbox(), 20, what="Postfix bounce") or []
ok([m for m in box if "X-Postfix-Queue-ID: %s" % q4 in m.as_string()],
   "case 4: the bounce is Postfix's own")
ok(not [l for l in snd.agent.log_lines() if q4 in l and
        "notification sent" in l], "case 4: the agent sent no DSN")

done()
