#!/usr/bin/env python3
"""42-milter-postfix.t - rapidretry-milter behind a real Postfix smtpd:
exact reply text on the wire, 20 recipients of 20 classes in one
transaction (1 accepted + 19 deferred, no 421, no error sleeps), the
Maildir holds exactly the accepted ones, modes strict/domain/policy, state
reset between transactions, NOTIFY=NEVER, exemptions via SIGHUP reload
(a bad reload keeps the old config), and fail open when the milter dies."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, done
from postfix import Receiver
import rrmilter
from rrmilter import Milter, Smtp, REPLY

rrmilter.binary()
rrtest.require_root()

DOMAINS = ["d%d.test" % i for i in range(1, 21)] + ["x.test", "y.test", "sub.y.test"]
CLASSES = """\
# test class map: first match wins
boss@x.test       vip
@x.test           staff
y.test            partners
default           other
"""


def conf(mode, extra=""):
    return "[milter]\nmode = %s\nclass_map = classes\n%s" % (mode, extra)


def codes(rcpts):
    """codes - one transaction to RCPTS on a new connection; the reply
    codes of the RCPTs"""
    s = Smtp(pf.port)
    s.cmd("EHLO client.test")
    replies, final = s.message("sender@client.test", rcpts)
    s.close()
    return [r[:3] for r in replies]


milter = Milter(rrtest.subdir("milter"), conf("domain"), CLASSES)
# myhostname rr-milter.test: smtpd's {daemon_name} (exempt_daemons below)
pf = Receiver("rr-milter", domains=DOMAINS, milter=milter.socket)
ok(milter.start(), "milter starts", milter.read_log())
ok(pf.start(), "postfix starts")

# --- domain mode: 20 recipients of 20 domains in one transaction
s = Smtp(pf.port)
s.cmd("EHLO client.test")
rcpts = ["u%d@d%d.test" % (i, i) for i in range(1, 21)]
t0 = time.monotonic()
replies, final = s.message("sender@client.test", rcpts)
took = time.monotonic() - t0
ok(replies[0].startswith(b"250 "), "first recipient accepted",
   replies[0])
is_(replies[1:], [REPLY.encode()] * 19,
    "19 later recipients get the exact 451 4.5.3 text, byte for byte")
ok(not any(r.startswith(b"421") for r in replies), "no 421")
ok(final is not None and final.startswith(b"250 "),
   "message accepted after DATA", final)
ok(took < 5.0, "20 RCPTs + DATA in %.2f s: no error sleeps" % took)
is_(pf.wait_delivered(1), ["u1@d1.test"],
    "Maildir holds exactly the accepted recipient")

# --- state reset: the next transaction on the same connection
replies, final = s.message("sender@client.test", rcpts[1:4])
is_([r[:3] for r in replies], [b"250", b"451", b"451"],
    "next transaction: the first deferred one is accepted now")
is_(pf.wait_delivered(2), ["u1@d1.test", "u2@d2.test"],
    "second transaction delivered")
# RSET resets too
s.cmd("MAIL FROM:<sender@client.test>")
s.cmd("RCPT TO:<u3@d3.test>")
s.cmd("RSET")
replies, final = s.message("sender@client.test",
                           ["u4@d4.test", "v4@d4.test", "u5@d5.test"])
is_([r[:3] for r in replies], [b"250", b"250", b"451"],
    "after RSET: domain mode keeps one domain, defers the other")
# NOTIFY=NEVER recipients are exempt (on by default)
replies, final = s.message(
    "sender@client.test", ["u6@d6.test", "u7@d7.test", "u8@d8.test"],
    rcpt_args=["", " NOTIFY=NEVER", " NOTIFY=FAILURE"])
is_([r[:3] for r in replies], [b"250", b"250", b"451"],
    "NOTIFY=NEVER recipient accepted, NOTIFY=FAILURE deferred")
s.close()

# --- policy mode via SIGHUP
ok(milter.reload(conf("policy"), "configuration reloaded"),
   "SIGHUP reloads (policy mode)")
s = Smtp(pf.port)
s.cmd("EHLO client.test")
replies, final = s.message(
    "sender@client.test",
    ["a@x.test", "boss@x.test", "b@X.TEST", "c@y.test", "d@sub.y.test",
     "e@d1.test"])
is_([r[:3] for r in replies],
    [b"250", b"451", b"250", b"451", b"451", b"451"],
    "policy mode: staff accepted, vip/partners/other deferred")
replies, final = s.message(
    "sender@client.test", ["c@y.test", "d@sub.y.test", "e@d1.test"])
is_([r[:3] for r in replies], [b"250", b"250", b"451"],
    "policy mode: subdomain entry matches sub.y.test")
s.close()

# --- a bad new config is refused, the old one stays
ok(milter.reload("[milter]\nmode = sideways\n", "reload refused"),
   "bad config on SIGHUP is refused")
is_(codes(["a@x.test", "b@x.test", "c@y.test"]), [b"250", b"250", b"451"],
    "old (policy) configuration still in force")

# --- strict mode
ok(milter.reload(conf("strict"), "configuration reloaded"), "strict mode")
is_(codes(["a@x.test", "b@x.test", "A@x.test"]), [b"250", b"451", b"250"],
    "strict: one address per transaction (same address again ok)")

# --- exemptions: client network, daemon name
for extra, name in (("exempt_networks = 10.0.0.0/8, 127.0.0.0/8\n",
                     "client network"),
                    ("exempt_daemons = rr-milter.test\n",
                     "{daemon_name}")):
    ok(milter.reload(conf("strict", extra), "configuration reloaded"),
       "reload with exempt " + name)
    is_(codes(["a@x.test", "b@y.test", "c@d1.test"]), [b"250"] * 3,
        "exempt %s: every recipient accepted" % name)

# --- custom reply text (with %%) reaches the client unchanged
ok(milter.reload(conf("strict", "reply_text = Only 100%% one at a time; "
                      "retry=0\n"), "configuration reloaded"),
   "reload with a custom reply text")
s = Smtp(pf.port)
s.cmd("EHLO client.test")
replies, final = s.message("sender@client.test", ["a@x.test", "b@x.test"])
is_(replies[1], b"451 4.5.3 Only 100% one at a time; retry=0",
    "custom text on the wire ('%%' becomes '%')")
s.close()

# --- a clean exit (LeakSanitizer reports at exit), then up again
is_(milter.stop(), 0, "milter: SIGTERM, exit status 0")
ok(milter.start(), "milter starts again", milter.read_log())

# --- fail open: the milter dies in the middle of a session
s = Smtp(pf.port)
s.cmd("EHLO client.test")
s.cmd("MAIL FROM:<sender@client.test>")
r1 = s.cmd("RCPT TO:<f1@d10.test>")
r2 = s.cmd("RCPT TO:<f2@d11.test>")
milter.kill()
r3 = s.cmd("RCPT TO:<f3@d12.test>")
s.cmd("DATA")
s.sock.sendall(b"Subject: fail open\r\n\r\nx\r\n.\r\n")
final = s.reply()
is_([r1[:3], r2[:3], r3[:3]], [b"250", b"451", b"250"],
    "milter killed: later RCPT accepted (milter_default_action)")
ok(final.startswith(b"250 "), "message accepted without milter",
   final)
s.close()
got = pf.wait_delivered(len(pf.delivered()) + 2)
ok("f1@d10.test" in got and "f3@d12.test" in got
   and "f2@d11.test" not in got, "fail-open message delivered", got)
ok(milter.sanitizer_free(), "no sanitizer reports")
done()
