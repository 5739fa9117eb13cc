#!/usr/bin/env python3
# 11-harness.t - the test harness itself, without the agent: smtpsink's
# scripts (pipelined input, per-RCPT rules, drop, LIMITS) driven by a raw
# client, and Postfix's own smtp client -> receiver Postfix (limit 3).
import os
import socket
import sys
sys.dont_write_bytecode = True
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink


def chat(port, payload, expect_lines, timeout=5):
    """chat - send raw bytes at once (pipelined), read reply lines."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf = b""
    lines = []
    try:
        s.sendall(payload.encode())
        end = time.monotonic() + timeout
        while len(lines) < expect_lines and time.monotonic() < end:
            d = s.recv(65536)
            if not d:
                break
            buf += d
            *done_, buf = buf.split(b"\r\n")
            lines += [l.decode() for l in done_]
    except socket.timeout:
        pass
    finally:
        s.close()
    return lines


# --- smtpsink: pipelined transaction with a 452 in the middle ---------------
sink = SmtpSink({"ehlo": ["PIPELINING", "LIMITS RCPTMAX=2"],
                 "rules": [{"cmd": "RCPT", "txn": 1, "rcpt": 2,
                            "reply": "452 4.5.3 Error: too many recipients"},
                           {"cmd": "RCPT", "addr": "grey@d1.test",
                            "reply": "450 4.2.0 Greylisted"}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
payload = ("EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@d1.test>\r\n"
           "RCPT TO:<b@d1.test>\r\nRCPT TO:<c@d2.test>\r\n"
           "RCPT TO:<grey@d1.test>\r\nDATA\r\n")
lines = chat(port, payload + "line\r\n..dot\r\n.\r\nQUIT\r\n", 12)
codes = [l[:4] for l in lines]
is_(codes, ["220 ", "250-", "250-", "250 ", "250 ", "250 ", "452 ", "250 ",
            "450 ", "354 ", "250 ", "221 "],
    "pipelined replies come in order, per-RCPT rules apply")
is_(lines[2], "250-PIPELINING", "EHLO lists the configured extensions")
msgs = sink.messages()
is_(len(msgs), 1, "one message recorded")
is_(msgs and msgs[0]["rcpts"], ["a@d1.test", "c@d2.test"],
    "recorded envelope: only the accepted recipients")
is_(msgs and msgs[0]["body"], "line\n.dot\n", "dot-stuffing undone")
is_(sink.rcpt_count("b@d1.test"), 1, "rcpt_count counts the wire")

# second transaction: txn-1 rule no longer applies
lines = chat(port, "HELO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@d1.test>\r\n"
             "RCPT TO:<b@d1.test>\r\nQUIT\r\n", 6)
is_([l[:3] for l in lines], ["220", "250", "250", "250", "250", "221"],
    "rules keyed on the transaction number stop after it")
is_(sink.connections(), 2, "two connections counted")

# --- drop after the final dot, silence, 421, garbage, rcpt_max, one_domain ---
sink2 = SmtpSink({"rcpt_max": 2, "one_domain": True,
                  "rules": [{"cmd": "DOT", "conn": 1, "action": "drop"},
                            {"cmd": "MAIL", "conn": 2, "raw": "garbage!"},
                            {"cmd": "MAIL", "conn": 3, "action": "silent"},
                            {"cmd": "RCPT", "conn": 4, "rcpt": 2,
                             "reply": "421 4.7.0 bye", "close": True}]})
p2 = sink2.start()
rrtest.at_cleanup(sink2.stop)
lines = chat(p2, "EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@d1.test>\r\n"
             "RCPT TO:<b@d2.test>\r\nRCPT TO:<c@d1.test>\r\n"
             "RCPT TO:<e@d1.test>\r\nDATA\r\nx\r\n.\r\n", 20, timeout=3)
is_([l[:3] for l in lines][-6:], ["250", "250", "451", "250", "452", "354"],
    "one_domain and rcpt_max defaults; drop after '.' sends nothing")
is_(sink2.messages(), [], "dropped message is not recorded")
lines = chat(p2, "EHLO c\r\nMAIL FROM:<s@x>\r\n", 8, timeout=2)
is_(lines[-1], "garbage!", "raw garbage reply")
t0 = time.monotonic()
lines = chat(p2, "EHLO c\r\nMAIL FROM:<s@x>\r\nQUIT\r\n", 8, timeout=1)
like(lines[-1], r"^250 ", "silent: no reply after MAIL, not even to QUIT")
lines = chat(p2, "EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@d1.test>\r\n"
             "RCPT TO:<b@d1.test>\r\nRCPT TO:<c@d1.test>\r\n", 12, timeout=2)
is_(lines[-1], "421 4.7.0 bye", "421 then close: nothing after it")

# --- Postfix's own smtp client -> receiver Postfix with limit 3 -------------
if os.geteuid() != 0:
    rrtest.skip("needs root", 4)
    done()
from postfix import Receiver, Sender

recv = Receiver("recv", main={"smtpd_recipient_limit": "3"}).start()
snd = Sender("snd", relay_port=recv.port, smtp=True).start()
rcpts = ["u%d@d1.test" % i for i in range(5)]
qid = snd.submit("s@src.test", rcpts)
ok(qid, "queue id from the sender's log: %s" % qid)
st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= 5 and
                       snd.statuses(qid), 30, what="5 statuses")
sent = [r for r, d, s, t in st if s == "sent"]
deferred = [(r, t) for r, d, s, t in st if s == "deferred"]
is_(len(sent), 3, "Postfix smtp: 3 delivered at the first attempt")
like(deferred and deferred[0][1], r"452 4\.5\.3 Error: too many recipients",
     "the rest deferred with the receiver's 452")
rrtest.wait_until(lambda: len(recv.delivered()) >= 3, 10)
is_(recv.delivered(), sorted(sent), "receiver's Maildir holds exactly those")
done()
