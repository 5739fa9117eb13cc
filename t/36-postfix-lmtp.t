#!/usr/bin/env python3
# 36-postfix-lmtp.t - LMTP mode through real Postfix (DESIGN §9): sender
# Postfix -> its lmtp client -> unix socket -> spawn(8) -> rapidretry-agent
# --lmtp -> receiver. Postfix itself logs, defers and bounces each
# recipient from our per-recipient replies:
#   1. limit-3 receiver, 20 recipients in 2 domains: 20 status=sent from
#      ONE delivery attempt, one agent process, one connection;
#   2. one recipient refused 550 5.1.1: Postfix bounces it with its own
#      DSN (none from rapidretry) and delivers the others;
#   3. greylisting: only the greylisted ones are deferred, and go out on
#      Postfix's retry;
#   4. NOTIFY=SUCCESS,DELAY, ORCPT, RET and ENVID reach a receiver that
#      announces DSN; for one that does not, rapidretry sends the
#      "relayed" notice (once) and Postfix none;
#   5. the LMTP connection cut after the onward delivery (a test fault):
#      Postfix tries again and no recipient arrives twice
#      (RR_LMTP_CUT_RUNS runs, 3 by default).
import os
import re
import shutil
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver, QID
from lmtpsender import LmtpSender
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

RCPTS = (["a%02d@d1.test" % i for i in range(1, 11)]
         + ["b%02d@d2.test" % i for i in range(1, 11)])
# the sender's own bounces stay local: src.test is discarded
DISCARD = {"transport_maps": "inline:{src.test=discard:}"}


def lmtp_sent(snd, qid, since=0):
    """lmtp_sent - recipients Postfix logged status=sent for QID through
    the rapidretry lmtp service."""
    rx = re.compile(r": %s: to=<([^>]+)>, relay=\S+\[private/rapidretry-"
                    r"lmtp\],.* status=sent " % qid)
    return sorted(m.group(1).lower() for m in map(rx.search,
                                                  snd.log_lines(since)) if m)




def lmtp_status(lines):
    """lmtp_status - the agent's per-recipient lines in LMTP mode (its
    syslog name is rapidretry-lmtp): [(qid, rcpt, dsn, status, text)]."""
    rx = re.compile(r"rapidretry-lmtp\[\d+\]: (\S+): to=<([^>]*)>,.*"
                    r"dsn=(\S+), status=(\w+) ?(.*)$")
    return [m.groups() for m in map(rx.search, lines) if m]


# --- 1. limit 3, 20 recipients ------------------------------------------------
access = rrtest.write_file(os.path.join(rrtest.tmpdir(), "access"),
                           "gone@d1.test 550 5.1.1 No such user\n")
recv = Receiver("recv", main={
    "smtpd_recipient_limit": "3",
    "smtpd_recipient_restrictions":
        "check_recipient_access texthash:%s, permit" % access}).start()
snd = LmtpSender("snd", relay_port=recv.port, main=DISCARD).start()

qid = snd.submit_smtp("s@src.test", RCPTS)
ok(qid, "message queued at the sender: %s" % qid)
st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= 20
                       and snd.statuses(qid), 60,
                       what="20 statuses from Postfix's lmtp client")
rrtest.wait_until(snd.queue_empty, 10, what="empty sender queue")
good = is_(sorted(s for r, d, s, t in st), ["sent"] * 20,
           "Postfix logged status=sent for all 20, no deferral")
good &= is_(lmtp_sent(snd, qid), sorted(RCPTS),
            "each through the rapidretry lmtp service")
like(st[0][3] if st else "", r"^\(250 2\.0\.0 <[^>]+>: 127\.0\.0\.1\[127\."
     r"0\.0\.1\]:%d said: 250 2\.0\.0 Ok: queued as " % recv.port,
     "Postfix's log shows where and what the receiver said")
good &= is_(recv.wait_delivered(20), sorted(RCPTS),
            "all 20 in the receiver's Maildir, each exactly once")
good &= ok(snd.queue_empty(), "the sender's queue is empty")
good &= is_(sorted(set(q for q, r, d, s, t in lmtp_status(
    snd.agent_log()))), [qid], "the agent's journal and log use Postfix's "
    "queue id (XFORWARD IDENT)")
good &= is_(len(set(re.findall(r"rapidretry-lmtp\[(\d+)\]",
                               "\n".join(snd.agent_log())))), 1,
            "one agent process (one LMTP connection)")
rrtest.wait_until(lambda: recv.sessions(), 10, what="receiver disconnect")
good &= is_(recv.connections(), 1, "the receiver saw 1 connection")
good &= is_(recv.transactions(), 7, "the receiver saw 7 transactions")
# pflogsumm on Postfix's log and the agent's together: each recipient
# counted once (the agent's lines carry no name pflogsumm reads)
if shutil.which("pflogsumm"):
    both = rrtest.write_file(os.path.join(rrtest.tmpdir(), "both.log"),
                             "\n".join(sorted(snd.log_lines()
                                              + snd.agent_log())) + "\n")
    p = subprocess.run(["pflogsumm", "--syslog-name=" +
                        snd.main["syslog_name"], both],
                       capture_output=True, text=True)
    m = re.search(r"^\s*(\d+)\s+delivered\b", p.stdout, re.M)
    is_(int(m.group(1)) if m else None, 20, "pflogsumm on both logs: 20 "
        "delivered, not 40")
else:
    rrtest.skip("pflogsumm not installed")
if not good:
    diag("\n".join(snd.log_lines()[-40:]))
    diag("\n".join(snd.agent_log()[-40:]))

# --- 2. 550 5.1.1 for one: Postfix bounces it ------------------------------
mark, rmark = snd.mark(), recv.mark()
r2 = ["c1@d1.test", "gone@d1.test", "c2@d2.test"]
before = recv.delivered()
q2 = snd.submit("s@src.test", r2)
st = rrtest.wait_until(lambda: len(snd.statuses(q2)) >= 3
                       and snd.statuses(q2), 60, what="3 statuses")
got = {r.lower(): (d, s) for r, d, s, t in st or []}
is_(got.get("gone@d1.test"), ("5.1.1", "bounced"),
    "Postfix bounced gone@d1.test with 5.1.1")
is_([got.get(r) for r in ("c1@d1.test", "c2@d2.test")],
    [("2.0.0", "sent")] * 2, "and delivered the other two")
bounce = snd.wait_log(r"%s: sender non-delivery notification: " % q2,
                      since=mark)
ok(bounce, "Postfix wrote its own non-delivery notification")
ok(not [l for l in snd.agent_log() if "non-delivery notification" in l],
   "rapidretry sent none")
rrtest.wait_until(lambda: len(recv.delivered()) >= len(before) + 2, 10)
is_(sorted(set(recv.delivered()) - set(before)), ["c1@d1.test",
                                                   "c2@d2.test"],
    "the receiver got the two")

# --- 3. greylisting: only those deferred --------------------------------------
grey = ["g1@d1.test", "g2@d2.test"]
sink = SmtpSink({"rules": [{"cmd": "RCPT", "addr": a, "times": 1,
                            "reply": "450 4.2.0 %s: Recipient address "
                                     "rejected: Greylisted for 1 seconds"
                                     % a} for a in grey]})
sport = sink.start()
rrtest.at_cleanup(sink.stop)
gsnd = LmtpSender("gsnd", relay_port=sport, main=DISCARD).start()
r3 = ["h1@d1.test", "g1@d1.test", "h2@d2.test", "g2@d2.test", "h3@d1.test"]
q3 = gsnd.submit("s@src.test", r3)
st = rrtest.wait_until(lambda: len(gsnd.statuses(q3)) >= 5
                       and gsnd.statuses(q3), 60, what="5 statuses")
got = {r.lower(): (d, s) for r, d, s, t in st or []}
is_(sorted(r for r, (d, s) in got.items() if s == "deferred"), grey,
    "Postfix deferred only the 2 greylisted recipients")
is_(sorted(r for r, (d, s) in got.items() if s == "sent"),
    ["h1@d1.test", "h2@d2.test", "h3@d1.test"], "and sent the other 3")
is_([got.get(g, ("", ""))[0] for g in grey], ["4.2.0"] * 2,
    "with the receiver's 4.2.0")
is_(sorted(gsnd.queued_rcpts()), grey, "only those 2 wait in the queue")
gmark = gsnd.mark()
gsnd.flush()
st = rrtest.wait_until(lambda: len(gsnd.statuses(q3, since=gmark)) >= 2
                       and gsnd.statuses(q3, since=gmark), 60,
                       what="the retry")
is_(sorted((r.lower(), s) for r, d, s, t in st or []),
    [(g, "sent") for g in grey], "Postfix's retry sent the 2")
is_(sink.delivered(), sorted(r3), "the receiver has each of the 5 once")

# --- 4. DSN parameters --------------------------------------------------------
dsink = SmtpSink({"ehlo": ["PIPELINING", "SIZE 10240000", "8BITMIME",
                           "ENHANCEDSTATUSCODES", "DSN"]})
nsink = SmtpSink({})
dport, nport = dsink.start(), nsink.start()
rrtest.at_cleanup(dsink.stop)
rrtest.at_cleanup(nsink.stop)
notices = rrtest.subdir("notices", owner=rrtest.TEST_USER)
capture = rrtest.write_file(os.path.join(rrtest.tmpdir(), "capture.sh"),
                            "#!/bin/sh\ncat > %s/notice.$$\n" % notices,
                            mode=0o755)
dagent = rrtest.Agent(name="dsnd/agent", relay="", dsn_sendmail=capture,
                      extra_text="\n[routes]\nd1.test = relay:[127.0.0.1]:%d"
                      "\nd2.test = relay:[127.0.0.1]:%d\n" % (dport, nport))
dsnd = LmtpSender("dsnd", agent=dagent, main=DISCARD).start()
dm = dsnd.mark()
q4 = dsnd.submit_smtp("s@src.test", ["k1@d1.test", "k2@d2.test"],
                      rcpt_options=["NOTIFY=SUCCESS,DELAY",
                                    "ORCPT=rfc822;orig+2Bx@src.test"],
                      mail_options=["RET=HDRS", "ENVID=env+3D1"])
st = rrtest.wait_until(lambda: len(dsnd.statuses(q4)) >= 2
                       and dsnd.statuses(q4), 60, what="2 statuses")
is_(sorted((r, s) for r, d, s, t in st or []),
    [("k1@d1.test", "sent"), ("k2@d2.test", "sent")], "both sent")
mail = [e["line"] for e in dsink.commands("MAIL")]
rcpt = [e["line"] for e in dsink.commands("RCPT")]
like(mail[0] if mail else "", r" RET=HDRS ENVID=env\+3D1$",
     "the DSN receiver got RET and ENVID")
is_(rcpt, ["RCPT TO:<k1@d1.test> NOTIFY=SUCCESS,DELAY "
           "ORCPT=rfc822;orig+2Bx@src.test"],
    "...and NOTIFY and ORCPT, as Postfix sent them")
ok([e["line"] for e in nsink.commands("RCPT")] == ["RCPT TO:<k2@d2.test>"]
   and not re.search(r"RET=|ENVID=", " ".join(
       e["line"] for e in nsink.commands("MAIL"))),
   "the receiver without DSN got no DSN parameters")
got = rrtest.wait_until(lambda: os.listdir(notices), 20,
                        what="the relayed notice") or []
is_(len(got), 1, "rapidretry sent one notice")
text = rrtest.read_file(os.path.join(notices, got[0])) if got else ""
like(text, r"(?m)^Final-Recipient: rfc822; k2@d2\.test$\n"
     r"Original-Recipient: rfc822; orig\+x@src\.test\nAction: relayed\n"
     r"Status: 2\.0\.0\n", "for k2 only: Action relayed, Original-Recipient")
like(text, r"(?m)^Original-Envelope-Id: env=1$", "with the envelope id")
ok("k1@d1.test" not in text.split("message/delivery-status")[-1]
   .split("text/rfc822-headers")[0], "nothing about k1 (its server does DSN)")
ok(not [l for l in dsnd.log_lines(dm) if "delivery status notification"
        in l], "Postfix sent no success notice of its own")

# --- 5. the LMTP connection cut after the onward delivery --------------------
runs = int(os.environ.get("RR_LMTP_CUT_RUNS", "3"))
csink = SmtpSink({})
cport = csink.start()
rrtest.at_cleanup(csink.stop)
csnd = LmtpSender("csnd", relay_port=cport, main=DISCARD,
                  env={"RAPIDRETRY_TEST_FAULT":
                       "lmtp-drop-after-delivery"}).start()
dups = lost = cut = 0
for n in range(runs):
    rl = ["x%d-%d@d1.test" % (n, i) for i in range(3)] + \
         ["y%d-%d@d2.test" % (n, i) for i in range(2)]
    m = csnd.mark()
    # even runs: arrived by SMTP (journal key: XFORWARD IDENT); odd
    # runs: local submission, no XFORWARD (key: sender + digest)
    q = (csnd.submit_smtp if n % 2 == 0 else csnd.submit)("s@src.test", rl)
    first = rrtest.wait_until(lambda: len(csnd.statuses(q, since=m)) >= 5
                              and csnd.statuses(q, since=m), 60,
                              what="first attempt of run %d" % n)
    cut += all(s == "deferred" for r, d, s, t in first or [])
    m2 = csnd.mark()
    csnd.flush()
    again = rrtest.wait_until(lambda: len(csnd.statuses(q, since=m2)) >= 5
                              and csnd.statuses(q, since=m2), 60,
                              what="retry of run %d" % n)
    got = sorted(r.lower() for r, d, s, t in again or [] if s == "sent")
    lost += got != sorted(rl)
    for r in rl:
        dups += csink.rcpt_count(r) > 1 or \
            csink.delivered().count(r) != 1
    if n == 0:
        like((first or [("", "", "", "")])[0][3],
             r"lost connection|Connection reset|timed out",
             "run 0: Postfix saw the connection cut: %s"
             % (first or [("", "", "", "")])[0][3][:120])
is_(cut, runs, "%d runs: the first attempt was cut every time" % runs)
is_(lost, 0, "%d runs: every recipient sent on Postfix's retry" % runs)
is_(dups, 0, "%d runs: no recipient arrived twice" % runs)
is_(len(csink.delivered()), 5 * runs, "%d messages delivered" % (5 * runs))
diag("cut-connection runs: %d, duplicates %d, lost %d" % (runs, dups, lost))
done()
