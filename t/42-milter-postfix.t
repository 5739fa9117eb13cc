#!/usr/bin/env python3
"""42-milter-postfix.t - rapidretry-milter behind a real Postfix smtpd:
exact reply text on the wire, 20 recipients of 20 classes in one
transaction (1 accepted + 19 deferred, no 421, no error sleeps), the
Maildir holds exactly the accepted ones, modes strict/domain/policy, state
reset between transactions, NOTIFY=NEVER, exemptions via SIGHUP reload
(a bad reload keeps the old config), and fail open when the milter dies."""

import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
from milter_pf import (Tap, Milter, Postfix, Smtp, REPLY, need_root,  # noqa
                       tempdir, wait_for)

tap = Tap()
need_root(tap)

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


d = tempdir("rr-milter-pf-")
milter = Milter(d, conf("domain"), CLASSES)
pf = Postfix(d, milter.socket, DOMAINS)
try:
    tap.ok(milter.start(), "milter starts", milter.read_log())
    err = pf.start()
    if not tap.ok(err is None, "postfix starts", err):
        tap.done()

    # --- domain mode: 20 recipients of 20 domains in one transaction
    s = Smtp(pf.port)
    s.cmd("EHLO client.test")
    rcpts = ["u%d@d%d.test" % (i, i) for i in range(1, 21)]
    t0 = time.monotonic()
    replies, final = s.message("sender@client.test", rcpts)
    took = time.monotonic() - t0
    tap.ok(replies[0].startswith(b"250 "), "first recipient accepted",
           replies[0])
    tap.eq(replies[1:], [REPLY.encode()] * 19,
           "19 later recipients get the exact 451 4.5.3 text, byte for byte")
    tap.ok(not any(r.startswith(b"421") for r in replies), "no 421")
    tap.ok(final is not None and final.startswith(b"250 "),
           "message accepted after DATA", final)
    tap.ok(took < 5.0, "20 RCPTs + DATA in %.2f s: no error sleeps" % took)
    tap.eq(pf.wait_delivered(1), ["u1@d1.test"],
           "Maildir holds exactly the accepted recipient")

    # --- state reset: the next transaction on the same connection
    replies, final = s.message("sender@client.test", rcpts[1:4])
    tap.eq([r[:3] for r in replies], [b"250", b"451", b"451"],
           "next transaction: the first deferred one is accepted now")
    tap.eq(pf.wait_delivered(2), ["u1@d1.test", "u2@d2.test"],
           "second transaction delivered")
    # RSET resets too
    s.cmd("MAIL FROM:<sender@client.test>")
    s.cmd("RCPT TO:<u3@d3.test>")
    s.cmd("RSET")
    replies, final = s.message("sender@client.test",
                               ["u4@d4.test", "v4@d4.test", "u5@d5.test"])
    tap.eq([r[:3] for r in replies], [b"250", b"250", b"451"],
           "after RSET: domain mode keeps one domain, defers the other")
    # NOTIFY=NEVER recipients are exempt (on by default)
    replies, final = s.message(
        "sender@client.test", ["u6@d6.test", "u7@d7.test", "u8@d8.test"],
        rcpt_args=["", " NOTIFY=NEVER", " NOTIFY=FAILURE"])
    tap.eq([r[:3] for r in replies], [b"250", b"250", b"451"],
           "NOTIFY=NEVER recipient accepted, NOTIFY=FAILURE deferred")
    s.close()

    # --- policy mode via SIGHUP
    def reload(text, expect):
        n = milter.read_log().count(expect)
        milter.write_conf(text)
        milter.signal(signal.SIGHUP)
        return wait_for(lambda: milter.read_log().count(expect) > n, 10)

    tap.ok(reload(conf("policy"), "configuration reloaded"),
           "SIGHUP reloads (policy mode)")
    s = Smtp(pf.port)
    s.cmd("EHLO client.test")
    replies, final = s.message(
        "sender@client.test",
        ["a@x.test", "boss@x.test", "b@X.TEST", "c@y.test", "d@sub.y.test",
         "e@d1.test"])
    tap.eq([r[:3] for r in replies],
           [b"250", b"451", b"250", b"451", b"451", b"451"],
           "policy mode: staff accepted, vip/partners/other deferred")
    replies, final = s.message(
        "sender@client.test", ["c@y.test", "d@sub.y.test", "e@d1.test"])
    tap.eq([r[:3] for r in replies], [b"250", b"250", b"451"],
           "policy mode: subdomain entry matches sub.y.test")
    s.close()

    # --- a bad new config is refused, the old one stays
    tap.ok(reload("[milter]\nmode = sideways\n", "reload refused"),
           "bad config on SIGHUP is refused")
    s = Smtp(pf.port)
    s.cmd("EHLO client.test")
    replies, final = s.message("sender@client.test",
                               ["a@x.test", "b@x.test", "c@y.test"])
    tap.eq([r[:3] for r in replies], [b"250", b"250", b"451"],
           "old (policy) configuration still in force")
    s.close()

    # --- strict mode
    tap.ok(reload(conf("strict"), "configuration reloaded"), "strict mode")
    s = Smtp(pf.port)
    s.cmd("EHLO client.test")
    replies, final = s.message("sender@client.test",
                               ["a@x.test", "b@x.test", "A@x.test"])
    tap.eq([r[:3] for r in replies], [b"250", b"451", b"250"],
           "strict: one address per transaction (same address again ok)")
    s.close()

    # --- exemptions: client network, daemon name
    for extra, name in (("exempt_networks = 10.0.0.0/8, 127.0.0.0/8\n",
                         "client network"),
                        ("exempt_daemons = rr-milter.test\n",
                         "{daemon_name}")):
        tap.ok(reload(conf("strict", extra), "configuration reloaded"),
               "reload with exempt " + name)
        s = Smtp(pf.port)
        s.cmd("EHLO client.test")
        replies, final = s.message("sender@client.test",
                                   ["a@x.test", "b@y.test", "c@d1.test"])
        tap.eq([r[:3] for r in replies], [b"250"] * 3,
               "exempt %s: every recipient accepted" % name)
        s.close()

    # --- custom reply text (with %%) reaches the client unchanged
    tap.ok(reload(conf("strict", "reply_text = Only 100%% one at a time; "
                       "retry=0\n"), "configuration reloaded"),
           "reload with a custom reply text")
    s = Smtp(pf.port)
    s.cmd("EHLO client.test")
    replies, final = s.message("sender@client.test", ["a@x.test", "b@x.test"])
    tap.eq(replies[1], b"451 4.5.3 Only 100% one at a time; retry=0",
           "custom text on the wire ('%%' becomes '%')")
    s.close()

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
    tap.eq([r1[:3], r2[:3], r3[:3]], [b"250", b"451", b"250"],
           "milter killed: later RCPT accepted (milter_default_action)")
    tap.ok(final.startswith(b"250 "), "message accepted without milter",
           final)
    s.close()
    got = pf.wait_delivered(len(pf.delivered()) + 2)
    tap.ok("f1@d10.test" in got and "f3@d12.test" in got
           and "f2@d11.test" not in got, "fail-open message delivered", got)
    tap.ok(not any(x in milter.read_log() for x in
                   ("ERROR: AddressSanitizer", "runtime error:")),
           "no sanitizer reports")
finally:
    milter.kill()
    pf.stop()
    if tap.failed:
        tap.diag("kept " + d)
    else:
        shutil.rmtree(d, ignore_errors=True)
tap.done()
