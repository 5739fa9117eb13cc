#!/usr/bin/env python3
# 26-lmtp-session.t - rapidretry-agent --lmtp started as spawn(8) starts
# it (stdin, stdout, stderr on one socket) against the scripted SMTP
# server (DESIGN §9): one reply per accepted RCPT after DATA, in order,
# with the remote's reply and where it came from; several transactions
# per session; the journal keyed by XFORWARD IDENT (a retry gets 250 and
# no second copy); bad input as Postfix's smtpd answers it; a client
# that goes away in DATA gets nothing delivered; the idle timeout; the
# age limit (421 to MAIL); only LMTP replies ever reach the socket; a
# server's 5xx greeting: 451 4.x.x per recipient; messages of falling
# size in one session arrive whole, each logged.
import os
import re
import signal
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink
from lmtpclient import LmtpAgent

rrtest.require_root()
rrtest.agent_binary()

sink = SmtpSink({"ehlo": ["PIPELINING", "SIZE 10240000", "8BITMIME",
                          "ENHANCEDSTATUSCODES"],
                 "rules": [
                     {"cmd": "RCPT", "addr": "gone@d1.test",
                      "reply": "550 5.1.1 No such user"},
                     {"cmd": "RCPT", "addr": "full@d1.test",
                      "reply": "452 4.2.2 Mailbox full"}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
# a generous cache time: the messages of one session share a connection
# however slow the machine
CACHE = "\n[lmtp]\nconnection_cache_time_limit = 60s\n"
agent = rrtest.Agent(relay="[127.0.0.1]:%d" % port, extra_text=CACHE)
MSG = rrtest.sample_message("s@src.test", ["x"])
RELAY = r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % port


def replies_only(raw):
    """replies_only - every byte on the socket is an LMTP reply line."""
    lines = raw.decode(errors="replace").split("\r\n")
    return lines[-1] == "" and all(re.match(r"^[2345]\d\d[ -]", l)
                                   for l in lines[:-1])


# --- 1. greeting, LHLO, per-recipient replies -------------------------------
s = LmtpAgent(agent)
like(" ".join(s.reply()), r"^220 sender\.test ", "greeting 220")
lhlo = s.cmd("LHLO postfix.test")
for ext in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8",
            "SIZE", "DSN", "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"):
    like(lhlo, r"(?m)^250[ -]%s$" % re.escape(ext), "LHLO announces " + ext)
rl = ["a@d1.test", "gone@d1.test", "full@d1.test", "b@d2.test"]
mail, rr, data, final = s.transaction("s@src.test", rl, MSG,
                                      ident="AB12CD34")
is_([mail] + rr + [data[:3]], ["250 2.1.0 Ok"] + ["250 2.1.5 Ok"] * 4
    + ["354"], "MAIL, 4 RCPT and DATA accepted (pipelined)")
is_(len(final), 4, "4 replies after the message, one per RCPT")
like(final[0], r"^250 2\.0\.0 <a@d1\.test>: %s said: 250 2\.0\.0 Ok" % RELAY,
     "1st: 250 with the remote reply and where it came from")
like(final[1], r"^550 5\.1\.1 <gone@d1\.test>: host %s said: 550 5\.1\.1 No "
     r"such user \(in reply to RCPT TO command\)$" % RELAY,
     "2nd: the remote's 550 5.1.1")
like(final[2], r"^452 4\.2\.2 <full@d1\.test>: host %s said: 452 4\.2\.2 "
     r"Mailbox full" % RELAY, "3rd: the remote's 452 4.2.2")
like(final[3], r"^250 2\.0\.0 <b@d2\.test>: ", "4th: 250")
is_(sink.delivered(), ["a@d1.test", "b@d2.test"],
    "the server got the message for the two it accepted")
is_([m["body"] for m in sink.messages()], [MSG],
    "byte for byte (dot-stuffing undone and redone, CRLF)")

# --- 2. the same message again (Postfix's retry): journal -------------------
mail, rr, data, final = s.transaction("s@src.test", rl, MSG,
                                      ident="AB12CD34")
like(final[0], r"^250 2\.0\.0 <a@d1\.test>: delivered in an earlier",
     "retry: the delivered one gets 250 from the journal")
like(final[3], r"^250 2\.0\.0 <b@d2\.test>: delivered in an earlier",
     "retry: so does the other")
like(final[2], r"^452 4\.2\.2 <full@d1\.test>", "retry: the deferred one is "
     "tried again")
is_(sink.rcpt_count("a@d1.test"), 1, "no second copy for a@d1.test")

# --- 3. without XFORWARD: a key from sender and digest ----------------------
mail, rr, data, final = s.transaction("t@src.test", ["c@d1.test"], MSG)
like(final[0] if final else "", r"^250 2\.0\.0 <c@d1\.test>: %s said"
     % RELAY, "a transaction without XFORWARD is delivered")
mail, rr, data, final = s.transaction("t@src.test", ["c@d1.test"], MSG)
like(final[0] if final else "", r"^250 2\.0\.0 <c@d1\.test>: delivered in "
     r"an earlier", "...and its repetition is not")
is_(sink.rcpt_count("c@d1.test"), 1, "c@d1.test got one copy")
is_(sink.connections(), 1, "5 messages of one LMTP session: 1 outbound "
    "connection (kept between messages)")
like("\n".join(agent.log_lines()), r"message done: .* 1 connections reused",
     "the log counts the reuse")

# --- 4. bad input ------------------------------------------------------------
bad = [("FOO", r"^502 5\.5\.2 Error: command not recognized$"),
       ("", r"^500 5\.5\.2 Error: bad syntax$"),
       ("NOOP\0x", r"^500 5\.5\.2 Error: bad syntax$"),
       ("X" * 5000, r"^500 5\.5\.0 Error: line too long$"),
       ("RCPT TO:<a@d1.test>", r"^503 5\.5\.1 Error: need MAIL command$"),
       ("DATA", r"^503 5\.5\.1 Error: need RCPT command$"),
       ("MAIL FROM:<s@src.test> FOO=1", r"^555 5\.5\.4 Unsupported option"),
       ("MAIL FROM:<s@src.test>", r"^250 2\.1\.0 Ok$"),
       ("RCPT TO:<bad address@d1.test>", r"^501 5\.1\.3 "),
       ("RCPT TO:<a@d1.test> NOTIFY=SOMETIMES", r"^501 5\.5\.4 "),
       ("DATA", r"^554 5\.5\.1 Error: no valid recipients$"),
       ("RSET", r"^250 2\.0\.0 Ok$"),
       ("NOOP", r"^250 2\.0\.0 Ok$")]
for cmd, want in bad:
    like(s.cmd(cmd), want, "%r -> %s" % (cmd[:30], want))
is_(s.cmd("QUIT"), "221 2.0.0 Bye", "QUIT")
ok(s.eof() and s.wait() == 0, "the session ends, exit status 0")
ok(replies_only(s.raw), "nothing but LMTP replies on the socket",
   [l for l in s.raw.decode(errors="replace").split("\r\n")
    if not re.match(r"^[2345]\d\d[ -]", l)])

# --- 4b. reuse limits: 2 messages per connection ----------------------------
agent.write_conf(extra_text=CACHE + "connection_reuse_count_limit = 2\n")
before = sink.connections()
s = LmtpAgent(agent)
s.reply()
s.cmd("LHLO p.test")
for i in range(3):
    s.transaction("s@src.test", ["m%d@d1.test" % i], MSG)
s.cmd("QUIT")
s.wait()
is_(sink.connections() - before, 2, "reuse count limit 2: 3 messages, 2 "
    "connections")
is_([sink.rcpt_count("m%d@d1.test" % i) for i in range(3)], [1, 1, 1],
    "each delivered once")
agent.write_conf(extra_text=CACHE + "\n[log]\ntranscript = yes\n")
before = sink.connections()
s = LmtpAgent(agent)
s.reply()
s.cmd("LHLO p.test")
for i in range(2):
    s.transaction("s@src.test", ["t%d@d1.test" % i], MSG)
s.cmd("QUIT")
is_(s.wait(), 0, "with transcripts in the delivery log...")
is_(sink.connections() - before, 2, "...no connection is kept between "
    "messages (its transcript belongs to one message)")

# --- 5. SIZE: at MAIL and in DATA --------------------------------------------
agent.write_conf(extra_text=CACHE + "size_limit = 300\n")
s = LmtpAgent(agent)
s.reply()
like(s.cmd("LHLO p.test"), r"(?m)^250-SIZE 300$", "SIZE 300 announced")
like(s.cmd("MAIL FROM:<s@src.test> SIZE=301"),
     r"^552 5\.3\.4 Message size exceeds fixed limit$", "SIZE=301: 552")
before = len(sink.messages())
big = MSG + "x" * 400 + "\n"
mail, rr, data, final = s.transaction("s@src.test", ["a@d1.test",
                                                     "b@d2.test"], big)
is_(final, ["552 5.3.4 Error: message file too big"] * 2,
    "a message over the limit: 552 for each recipient")
is_(len(sink.messages()), before, "nothing delivered")
s.cmd("QUIT")
agent.write_conf(extra_text="")

# --- 6. the client goes away in the middle of DATA ---------------------------
s = LmtpAgent(agent)
s.reply()
s.cmd("LHLO p.test")
s.send("MAIL FROM:<s@src.test>\r\nRCPT TO:<gone-midway@d1.test>\r\n"
       "DATA\r\n")
s.replies(3)
s.send("Subject: cut\r\n\r\nhalf a message\r\n")
s.sock.shutdown(2)
is_(s.wait(), 0, "client gone in DATA: the session ends")
is_(sink.rcpt_count("gone-midway@d1.test"), 0, "nothing delivered")
like("\n".join(agent.log_lines()), r"lost connection with the LMTP client "
     r"while receiving the message", "...and the log says why")

# --- 7. idle timeout ---------------------------------------------------------
agent.write_conf(extra_text="\n[lmtp]\nidle_timeout = 1s\n")
s = LmtpAgent(agent)
s.reply()
s.cmd("LHLO p.test")
like(" ".join(s.reply(timeout=10)), r"^421 4\.4\.2 sender\.test Error: "
     r"timeout exceeded$", "a silent client gets 421 after idle_timeout")
ok(s.eof(), "and the session ends")

# --- 8. the age limit: MAIL gets 421 before spawn(8)'s time limit -----------
agent.write_conf(extra_text="\n[lmtp]\ntime_limit = 70s\ndeadline = 10s\n")
s = LmtpAgent(agent)
s.reply()
s.send("LHLO p.test\r\nMAIL FROM:<s@src.test>\r\n")
s.reply()
like(" ".join(s.reply()), r"^421 4\.3\.2 sender\.test Service shutting",
     "time_limit - deadline - 60s passed: new MAIL gets 421")
ok(s.eof(), "and the session ends")
s = LmtpAgent(agent)
s.reply()
s.cmd("LHLO p.test")
like(" ".join(s.reply()), r"^421 4\.3\.2 sender\.test Service closing",
     "...and between messages the agent hangs up by itself (Postfix's "
     "connection cache then drops the connection)")
ok(s.eof(), "and the session ends")

# --- 8b. SIGTERM (postfix stop) between messages ------------------------------
agent.write_conf(extra_text="")
s = LmtpAgent(agent)
s.reply()
s.cmd("LHLO p.test")
s.proc.send_signal(signal.SIGTERM)
like(" ".join(s.reply()), r"^421 4\.3\.2 sender\.test Service shutting "
     r"down$", "SIGTERM while idle: 421 4.3.2")
is_(s.wait(), 0, "and exit status 0")

# --- 9. no configuration: 421 greeting ----------------------------------------
agent.write_conf(extra_text="\n[lmtp]\nbogus = 1\n")
s = LmtpAgent(agent)
like(" ".join(s.reply()), r"^421 4\.3\.5 rapidretry: configuration error",
     "a broken configuration: 421 at the greeting (Postfix defers)")
ok(s.eof(), "and the session ends")
agent.write_conf(extra_text="")

# --- 10. the [lmtp] deadline: a stalled server, replies in time --------------
stall = SmtpSink({"rules": [{"cmd": "RCPT", "action": "silent"}]})
sport = stall.start()
rrtest.at_cleanup(stall.stop)
slow = rrtest.Agent(name="slow", relay="[127.0.0.1]:%d" % sport,
                    timeouts={k: "120s" for k in rrtest.TIMEOUT_KEYS},
                    extra_text="\n[lmtp]\ndeadline = 10s\n")
s = LmtpAgent(slow, timeout=60)
s.reply()
s.cmd("LHLO p.test")
t0 = time.monotonic()
mail, rr, data, final = s.transaction("s@src.test", ["x1@d1.test",
                                                     "x2@d2.test"], MSG)
took = time.monotonic() - t0
is_([l[:9] for l in final], ["451 4.4.2"] * 2, "a server that stalls: "
    "each recipient 451 4.4.2 at the [lmtp] deadline: %r" % final[:1])
ok(9 <= took < 40, "after %.1fs: the deadline (10s), not the SMTP "
   "timeouts (120s) nor Postfix's lmtp_data_done_timeout" % took)
is_(stall.delivered(), [], "nothing delivered")
# --- 11. a 5xx greeting (the only server): 451 per recipient, not 5xx -------
# (Postfix's smtp_skip_5xx_greeting: the server refuses all mail, which
# says nothing about a recipient; a 5xx here would make Postfix bounce)
refuser = SmtpSink({"greeting": "554 5.7.1 mx.test does not take mail "
                                "from you"})
gport = refuser.start()
rrtest.at_cleanup(refuser.stop)
gagent = rrtest.Agent(name="greet554", relay="[127.0.0.1]:%d" % gport)
s = LmtpAgent(gagent)
s.reply()
s.cmd("LHLO p.test")
mail, rr, data, final = s.transaction("s@src.test", ["g1@d1.test",
                                                     "g2@d2.test"], MSG)
is_(len(final), 2, "greeting 554: a reply per recipient")
ok(all(re.match(r"^451 4\.7\.1 <g\d@d\d\.test>: host \S+ refused to "
                r"talk to me: 554 5\.7\.1 mx\.test", l) for l in final),
   "greeting 554: each 451 4.7.1 with the server's text: %r" % final[:1])
is_(refuser.delivered(), [], "greeting 554: nothing delivered")
# --- 12. one session, messages of falling size: each arrives whole --------
# (the session reuses one spool file and one delivery log handle for all
# its messages: a short message after a long one must not carry its tail,
# and every message's rows reach the delivery log)
import sqlite3
vsink = SmtpSink({"ehlo": ["PIPELINING", "8BITMIME"]})
vport = vsink.start()
rrtest.at_cleanup(vsink.stop)
vagent = rrtest.Agent(name="sizes", relay="[127.0.0.1]:%d" % vport,
                      extra_text=CACHE)
s = LmtpAgent(vagent)
s.reply()
s.cmd("LHLO p.test")
bodies = [rrtest.sample_message("s@src.test", ["v"], subject="m%d" % i,
                                body="".join("line %d of %d\n" % (k, i)
                                             for k in range(n)))
          for i, n in enumerate((20000, 300, 1, 0, 5000))]
finals = []
for i, b in enumerate(bodies):
    finals += s.transaction("s@src.test", ["v%d@d1.test" % i], b,
                            ident="SZ%05X" % i)[3]
ok(all(f.startswith("250 ") for f in finals) and len(finals) == 5,
   "five messages in one session: 250 each: %r" % finals[:2])
is_([m["body"] for m in vsink.messages()], bodies,
    "each arrives byte for byte, the short ones without the long one's "
    "tail")


def logged_rows(path):
    try:
        c = sqlite3.connect(path)
        try:
            return c.execute("SELECT count(*) FROM attempts").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return -1


# the session still open and quiet: the held rows are written (50 ms)
ok(rrtest.wait_until(lambda: logged_rows(vagent.journal[:-3] + "-log.db")
                     == 5, 3, what="the held rows"),
   "a quiet session writes the delivery log rows it holds before it ends")
s.cmd("QUIT")
s.wait()
db = sqlite3.connect(vagent.journal[:-3] + "-log.db")
is_(sorted(r[0] for r in db.execute("SELECT recipient FROM attempts")),
    ["v%d@d1.test" % i for i in range(5)],
    "the delivery log has each message's row (one handle for the session)")
db.close()
# --- 13. [agent] journal_sync = yes: the journal stops a second copy too --
nsink = SmtpSink({"ehlo": ["PIPELINING"]})
nport = nsink.start()
rrtest.at_cleanup(nsink.stop)
nagent = rrtest.Agent(name="sync", relay="[127.0.0.1]:%d" % nport,
                      agent_extra={"journal_sync": "yes"})
for attempt in (1, 2):
    s = LmtpAgent(nagent)
    s.reply()
    s.cmd("LHLO p.test")
    final = s.transaction("s@src.test", ["n1@d1.test", "n2@d2.test"], MSG,
                          ident="SYNC1")[3]
    is_([f[:4] for f in final], ["250 "] * 2,
        "journal_sync = yes, attempt %d: 250 per recipient" % attempt)
    s.cmd("QUIT")
    s.wait()
is_(nsink.delivered(), ["n1@d1.test", "n2@d2.test"],
    "journal_sync = yes: the retry delivers nothing again")
# --- 14. two servers per message, sessions kept: rows of the right run ----
# (each message's two lanes run on worker threads that outlive it; a
# lane on a kept session begins no new connection, and its rows must not
# reach back to the connection of an earlier message, long freed)
wa, wb = SmtpSink({"ehlo": ["PIPELINING"]}), SmtpSink({"ehlo": ["PIPELINING"]})
pa, pb = wa.start(), wb.start()
rrtest.at_cleanup(wa.stop)
rrtest.at_cleanup(wb.stop)
wagent = rrtest.Agent(name="lanes", relay="", extra_text=CACHE + (
    "[routes]\nd1.test = relay:[127.0.0.1]:%d\n"
    "d2.test = relay:[127.0.0.1]:%d\n" % (pa, pb)))
s = LmtpAgent(wagent)
s.reply()
s.cmd("LHLO p.test")
finals = []
for i in range(6):
    finals += s.transaction("s@src.test", ["w%da@d1.test" % i,
                                           "w%db@d2.test" % i], MSG,
                            ident="LN%05X" % i)[3]
is_([f[:4] for f in finals], ["250 "] * 12, "six messages over two kept "
    "sessions: 250 per recipient")
is_((wa.connections(), wb.connections()), (1, 1),
    "one connection per server for all six")
s.cmd("QUIT")
is_(s.wait(), 0, "the agent ends the session cleanly")
db = sqlite3.connect(wagent.journal[:-3] + "-log.db")
is_(db.execute("SELECT count(*) FROM attempts WHERE status = 'sent'")
    .fetchone()[0], 12, "the delivery log has the 12 rows")
db.close()
done()
