#!/usr/bin/env python3
# 70-tls.t - rapidretry-agent with STARTTLS against real Postfix receivers
# (smtpd_tls_security_level = may, certificates from a test CA): "may"
# encrypts, "verify" with the right CA and name delivers, a wrong name or
# an untrusted CA defers 4.7.5 with the reason, "encrypt" against a
# receiver without STARTTLS defers 4.7.5; RapidRetry inside one TLS
# session (limit-3 receiver: 20/20 in one run, one handshake); two lanes
# whose first STARTTLS races; LMTP mode keeps one TLS connection for
# several messages.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver
import tlsca

rrtest.require_root()
rrtest.agent_binary()

ca = tlsca.CA("good")
other = tlsca.CA("other")
cert, key = ca.server("mx", ["mx.tls.test", "localhost"])
recv = Receiver("tlsrecv", main=dict(tlsca.smtpd_tls(cert, key),
                                     smtpd_recipient_limit="3"),
                master_extra=tlsca.TLSMGR).start()
plain = Receiver("plainrecv").start()
agent = rrtest.Agent(deadline="30s")
_qid = [0x7A000]


def run(rcpts, port, tls_text, **kw):
    """run - one agent run to 127.0.0.1:PORT with TLS_TEXT appended to the
    config; (result, qid, log lines of this run)"""
    _qid[0] += 1
    qid = "%X" % _qid[0]
    res, lines = agent.run_extra(rcpts, port, tls_text, qid, **kw)
    return res, qid, lines


def tls_lines(lines):
    return [l for l in lines if "TLS connection" in l]


def sent(lines, qid):
    return sorted(r for q, r, d, s, t in rrtest.agent_status(lines, "sent")
                  if q == qid)


def recv_tls_count(r, since):
    return len([l for l in r.log_lines(since)
                if re.search(r"smtpd\[\d+\]: \S+ TLS connection established"
                             r" from", l)])


POLICY = "\n[tls_policy]\nrelay:[127.0.0.1]:%d = %s\n"

# --- 1. may (the default), no CA configured: Untrusted, but encrypted ---
mark = recv.mark()
res, qid, lines = run(["t1@d1.test"], recv.port, "")
good = is_(res.rc, 0, "may: delivered (exit 0)")
good &= is_(sent(lines, qid), ["t1@d1.test"], "may: status=sent logged")
good &= like("\n".join(tls_lines(lines)),
             r": %s: Untrusted TLS connection established to "
             r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.[23] with cipher \S+"
             % (qid, recv.port),
             "may: the agent logs the Postfix-style TLS line (Untrusted)")
good &= ok(rrtest.wait_until(lambda: recv_tls_count(recv, mark) >= 1, 10),
           "may: the receiver logs a TLS connection")
good &= ok(rrtest.wait_until(lambda: any(
    "using TLSv1." in t for _, t in recv.messages()), 10),
    "may: the stored message's Received: header says TLS")
if not good:
    diag("\n".join(lines))

# --- 2. may with the CA: Trusted (chain good, 127.0.0.1 not a name) -----
res, qid, lines = run(["t2@d1.test"], recv.port,
                      "[tls]\nca_file = %s\n" % ca.cert)
is_(res.rc, 0, "may + CA: delivered")
like("\n".join(tls_lines(lines)), r"Trusted TLS connection established",
     "may + CA: logged as Trusted")

# --- 3. verify, right CA and name: Verified, delivered -------------------
res, qid, lines = run(["t3@d1.test"], recv.port,
                      "[tls]\nca_file = %s\n" % ca.cert
                      + POLICY % (recv.port, "verify match=mx.tls.test"))
good = is_(res.rc, 0, "verify, right CA and name: delivered")
good &= like("\n".join(tls_lines(lines)),
             r"Verified TLS connection established to .*:%d: TLSv1\.3"
             % recv.port, "verify: logged as Verified, TLSv1.3")
if not good:
    diag(repr(res))
    diag("\n".join(lines))

# --- 3b. verify via [tls] security_level and verify_names ---------------
res, qid, lines = run(["t3b@d1.test"], recv.port,
                      "[tls]\nsecurity_level = verify\nca_file = %s\n"
                      "verify_names = nope.test:localhost\n" % ca.cert)
is_(res.rc, 0, "verify via [tls] verify_names (second name matches): "
    "delivered")

# --- 4. verify, wrong name: 4.7.5 ----------------------------------------
# t1, t2, t3 and t3b reach the Maildir after the agent's run ends (the
# receiver's local(8) writes them): count once they are all there.
n_before = len(recv.wait_delivered(4))
res, qid, lines = run(["t4@d1.test"], recv.port,
                      "[tls]\nca_file = %s\n" % ca.cert
                      + POLICY % (recv.port, "verify match=wrong.test"))
good = is_(res.rc, 75, "verify, wrong name: deferred (75)")
good &= like(res.out, r"^4\.7\.5 Server certificate not verified: .*name "
             r"mismatch.*mx\.tls\.test.*wrong\.test",
             "verify, wrong name: 4.7.5 with the reason")
good &= like("\n".join(lines), r"to=<t4@d1\.test>.*dsn=4\.7\.5, "
             r"status=deferred \(Server certificate not verified",
             "verify, wrong name: the recipient's log line says why")
if not good:
    diag("\n".join(lines))

# --- 5. verify, untrusted CA: 4.7.5 ---------------------------------------
res, qid, lines = run(["t5@d1.test"], recv.port,
                      "[tls]\nca_file = %s\n" % other.cert
                      + POLICY % (recv.port, "verify match=mx.tls.test"))
is_(res.rc, 75, "verify, untrusted CA: deferred (75)")
like(res.out, r"^4\.7\.5 Server certificate not verified: .*untrusted "
     r"issuer", "verify, untrusted CA: 4.7.5 untrusted issuer")
ok(not rrtest.wait_until(lambda: any(
    r in ("t4@d1.test", "t5@d1.test") for r in recv.delivered()), 2)
   and len(recv.delivered()) == n_before,
   "nothing delivered when not verified")

# --- 6. encrypt against a receiver without STARTTLS -----------------------
res, qid, lines = run(["t6@d1.test"], plain.port,
                      POLICY % (plain.port, "encrypt"))
is_(res.rc, 75, "encrypt, no STARTTLS offered: deferred")
like(res.out, r"^4\.7\.5 TLS is required, but was not offered by host "
     r"127\.0\.0\.1\[127\.0\.0\.1\]", "encrypt: Postfix's reason, 4.7.5")
is_(plain.delivered(), [], "encrypt: nothing sent in clear text")

# --- 6b. may against the same receiver: clear text, delivered -------------
res, qid, lines = run(["t6b@d1.test"], plain.port, "")
is_(res.rc, 0, "may, no STARTTLS offered: delivered in clear")
is_(tls_lines(lines), [], "may, clear: no TLS line logged")

# --- 7. RapidRetry inside TLS: limit 3, 20 recipients, one handshake ----
RCPTS = (["a%02d@d1.test" % i for i in range(1, 11)]
         + ["b%02d@d2.test" % i for i in range(1, 11)])
mark = recv.mark()
before = len(recv.delivered())
res, qid, lines = run(RCPTS, recv.port,
                      "[tls]\nca_file = %s\n" % ca.cert
                      + POLICY % (recv.port, "verify match=mx.tls.test"))
rrtest.wait_until(lambda: recv.sessions(mark), 10, what="disconnect")
rrtest.wait_until(lambda: len(recv.delivered()) >= before + 20, 10)
good = is_(res.rc, 0, "TLS + limit 3: exit 0")
good &= is_(sent(lines, qid), sorted(RCPTS),
            "TLS + limit 3: 20/20 status=sent in one invocation")
good &= is_(len(rrtest.agent_pids(lines)), 1, "TLS + limit 3: one run")
good &= is_(recv.connections(mark), 1, "TLS + limit 3: one connection")
good &= is_(recv_tls_count(recv, mark), 1, "TLS + limit 3: one handshake")
good &= is_(len(tls_lines(lines)), 1, "TLS + limit 3: one TLS log line")
good &= is_(recv.transactions(mark), 7, "TLS + limit 3: 7 transactions")
if not good:
    diag("\n".join(lines))
    diag("\n".join(recv.log_lines(mark)[-30:]))

# --- 8. a reconnect in the same run resumes the TLS session -------------
# the receiver answers "421" to one recipient and hangs up (access(5));
# the agent reconnects (up to max_reconnects) and offers the session of
# the first handshake, which the server takes (RFC 8446 tickets). Postfix
# issues no new ticket on a resumed TLS 1.3 connection, and OpenSSL marks
# a session that ended without a clean TLS shutdown as not resumable: the
# agent keeps its own copy, so the third connection resumes too.
access = os.path.join(rrtest.subdir("tls421"), "access")
rrtest.write_file(access, "bad@d1.test 421 4.7.0 tls421.test closing\n")
hang = Receiver("tls421", main=dict(
    tlsca.smtpd_tls(cert, key),
    smtpd_recipient_restrictions="check_recipient_access texthash:"
    + access + ", permit"), master_extra=tlsca.TLSMGR).start()
mark = hang.mark()
res, qid, lines = run(["ok1@d1.test", "bad@d1.test"], hang.port,
                      "[agent]\nmax_reconnects = 2\n")
rrtest.wait_until(lambda: len(hang.sessions(mark))
                  >= hang.connections(mark) > 0, 10, what="disconnect")
tl = tls_lines(lines)
good = is_(res.rc, 75, "reconnects: deferred (the 421 comes every time)")
good &= is_(hang.connections(mark), 3,
            "reconnects: 3 connections (max_reconnects = 2)")
good &= is_(len(tl), 3, "reconnects: a TLS line per connection")
good &= ok(tl and "session resumed" not in tl[0],
           "reconnects: the first handshake is a full one")
good &= ok(len(tl) == 3 and all("session resumed" in l for l in tl[1:]),
           "reconnects: the second and third resume the first session")
diag("reconnects: %s" % ", ".join(
    "resumed" if "session resumed" in l else "full handshake" for l in tl))
if not good:
    diag("\n".join(lines))
    diag("\n".join(hang.log_lines(mark)[-30:]))
# --- two lanes start TLS at once -----------------------------------------
# d1.test and d2.test go to two receivers, delivered in parallel by two
# lanes (threads) whose first STARTTLS races: the module is loaded and the
# context built once, each lane gets its own TLS connection.
lanes = rrtest.Agent(name="lanes", relay="", extra_text=(
    "\n[routes]\nd1.test = relay:[127.0.0.1]:%d\n"
    "d2.test = relay:[127.0.0.1]:%d\n" % (recv.port, hang.port)))
mark1, mark2 = recv.mark(), hang.mark()
rl = ["lane%d@d%d.test" % (i, 1 + i % 2) for i in range(6)]
before = len(lanes.log_lines())
res = lanes.run(rl, queue_id="7A2A1", nexthop="batch")
llines = lanes.log_lines()[before:]
good = is_(res.rc, 0, "two lanes: all delivered (exit 0)")
good &= is_(sorted(sent(llines, "7A2A1")), sorted(rl),
            "two lanes: status=sent for the 6")
good &= is_(len(tls_lines(llines)), 2, "two lanes: a TLS line each")
good &= ok(rrtest.wait_until(lambda: recv_tls_count(recv, mark1) == 1 and
                             recv_tls_count(hang, mark2) == 1, 10),
           "two lanes: each receiver logs one TLS connection")
if not good:
    diag(repr(res))
    diag("\n".join(llines))

# --- LMTP mode: one STARTTLS connection kept for several messages --------
# The connection cache keeps the session with its TLS state between the
# messages of one LMTP session (limit-3 receiver: 4 recipients a message,
# RapidRetry inside it); the TLS module is loaded once, the handshake
# done once.
from lmtpclient import LmtpAgent
lagent = rrtest.Agent(name="lmtptls", relay="[127.0.0.1]:%d" % recv.port,
                      extra_text="\n[lmtp]\nconnection_cache_time_limit"
                      " = 60s\n")
mark = recv.mark()
before = len(recv.delivered())
s = LmtpAgent(lagent)
s.reply()
s.cmd("LHLO postfix.test")
sent_all = []
for i in range(3):
    rl = ["l%d.%d@d1.test" % (i, j) for j in range(4)]
    sent_all += rl
    mail, rr, data, final = s.transaction(
        "s@src.test", rl, rrtest.sample_message("s@src.test", rl),
        ident="LT%d" % i)
    is_([l[:4] for l in final], ["250 "] * 4,
        "LMTP over TLS, message %d: 250 for each of 4" % (i + 1)) \
        or diag(repr(final))
s.cmd("QUIT")
ok(s.eof(), "LMTP over TLS: the session ends after QUIT")
ok(rrtest.wait_until(lambda: len(recv.delivered()) - before
                     >= len(sent_all), 20),
   "LMTP over TLS: the messages arrived")
is_(sorted(r for r in recv.delivered() if r in sent_all), sorted(sent_all),
    "LMTP over TLS: each recipient once")
is_(recv_tls_count(recv, mark), 1,
    "LMTP over TLS: one TLS connection for the 3 messages")
llines = lagent.log_lines()
is_(len([l for l in llines if "TLS connection established" in l]), 1,
    "LMTP over TLS: the agent logs one TLS line")
done()
