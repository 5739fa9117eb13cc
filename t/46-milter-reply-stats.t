#!/usr/bin/env python3
"""46-milter-reply-stats.t - rapidretry-milter behind a real Postfix
smtpd: `reply_code = 452` puts "452 4.5.3 TEXT" on the wire (451 stays
the default, and a SIGHUP switches between them), and `stats_file` is
rewritten every stats_interval in the Prometheus text format with the
counters of what crossed the wire: transactions, transactions with a
deferral, accepted and deferred recipients. The milter over TCP
(inet:PORT@127.0.0.1) answers like over the UNIX socket, and a recording
proxy between smtpd and the milter shows that Postfix never writes twice
in a row without a reply between (a packet left unanswered makes Nagle's
algorithm hold the next one for the milter's delayed ACK: 40 ms a
message); and that CONNECT and MAIL went without a reply (NR flags)."""

import os
import select
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, done
from postfix import Receiver
import rrmilter
from rrmilter import Milter, Smtp

rrmilter.binary()
rrtest.require_root()

TEXT = ("Use PRDR or retry immediately, possibly in the same TCP "
        "connection, after DATA End of data; retry=0")
d = rrtest.subdir("milter")
PROM = os.path.join(d, "milter.prom")
os.chown(d, 65534, -1)                  # nobody writes the stats file


def conf(extra=""):
    return ("[milter]\nmode = strict\nstats_interval = 1s\n"
            "stats_file = %s\n%s" % (PROM, extra))


def txn(port, rcpts):
    """txn - one transaction on a new connection: (RCPT replies, final)"""
    s = Smtp(port)
    s.cmd("EHLO client.test")
    replies, final = s.message("sender@client.test", rcpts)
    s.close()
    return replies, final


def prom():
    """prom - {metric{labels}: value} from the stats file"""
    out = {}
    for line in rrtest.read_file(PROM).splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = int(value)
    return out


class Proxy:
    """Proxy - a TCP relay between smtpd and the milter on 127.0.0.1 that
    keeps, per connection, every chunk it read with its direction:
    [("mta" | "milter", bytes)]."""

    def __init__(self, target_port):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            for x in (a, b):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log = []
            self.conns.append(log)
            threading.Thread(target=self.relay, args=(a, b, log),
                             daemon=True).start()

    @staticmethod
    def relay(a, b, log):
        peer = {a: (b, "mta"), b: (a, "milter")}
        while True:
            r, _, _ = select.select([a, b], [], [], 30)
            if not r:
                break
            for x in r:
                data = x.recv(65536)
                if not data:
                    a.close()
                    b.close()
                    return
                log.append((peer[x][1], data))
                peer[x][0].sendall(data)


def commands(data):
    """commands - the milter command letters of the packets in DATA"""
    out, i = [], 0
    while i + 5 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        out.append(chr(data[i + 4]))
        i += 4 + n
    return "".join(out)


milter = Milter(d, conf())
pf = Receiver("rr-stats", domains=["x.test"], milter=milter.socket)
ok(milter.start(), "milter starts", milter.read_log())
ok(pf.start(), "postfix starts")
ok(rrtest.wait_until(lambda: os.path.exists(PROM), 10),
   "the stats file is written at start")
is_(prom().get("rapidretry_milter_transactions_total"), 0,
    "it starts at 0 transactions")

# --- default: 451 4.5.3
replies, final = txn(pf.port, ["a@x.test", "b@x.test", "c@x.test"])
is_([r.decode() for r in replies],
    ["250 2.1.5 Ok", "451 4.5.3 " + TEXT, "451 4.5.3 " + TEXT],
    "default reply_code: 250, then 451 4.5.3 on the wire")
ok(final is not None and final.startswith(b"250"), "the message is taken")

# --- reply_code = 452 by SIGHUP
ok(milter.reload(conf("reply_code = 452\n")), "reload with reply_code 452")
replies, final = txn(pf.port, ["a@x.test", "b@x.test", "c@x.test",
                               "a@x.test"])
is_([r.decode() for r in replies],
    ["250 2.1.5 Ok", "452 4.5.3 " + TEXT, "452 4.5.3 " + TEXT,
     "250 2.1.5 Ok"],
    "reply_code 452: 452 4.5.3 TEXT on the wire, same class accepted")
replies, final = txn(pf.port, ["b@x.test"])
is_([r.decode() for r in replies], ["250 2.1.5 Ok"],
    "a new transaction starts a new class")

# --- stats file: 3 transactions, 2 of them with deferrals,
# 1+2+1 accepted (the repeated address counts), 4 deferred
want = {
    "rapidretry_milter_transactions_total": 3,
    "rapidretry_milter_deferring_transactions_total": 2,
    'rapidretry_milter_recipients_total{verdict="accepted"}': 4,
    'rapidretry_milter_recipients_total{verdict="deferred"}': 4,
    'rapidretry_milter_recipients_total{verdict="exempted"}': 0,
    "rapidretry_milter_failopen_total": 0,
}
rrtest.wait_until(lambda: prom() == want, 10, what="stats file")
is_(prom(), want, "stats file: the counters of what crossed the wire")
text = rrtest.read_file(PROM)
ok(all("# TYPE %s counter" % m in text for m in (
    "rapidretry_milter_transactions_total",
    "rapidretry_milter_recipients_total")),
   "Prometheus TYPE lines", text)
ok(not [f for f in os.listdir(d) if f.startswith("milter.prom") and
        f != "milter.prom"], "no temporary files left beside it",
   os.listdir(d))
ok(os.stat(PROM).st_uid == 65534, "written as the milter's user (nobody)")

# --- the same over TCP (inet:PORT@127.0.0.1)
port = rrtest.free_port()
tm = Milter(rrtest.subdir("milter-inet"), "[milter]\nmode = strict\n"
            "reply_code = 452\n", spec="inet:%d@127.0.0.1" % port)
ok(tm.start(), "milter on inet:%d@127.0.0.1 starts" % port, tm.read_log())
# milter= brings main.cf.example's milter settings; smtpd_milters is ours
pf2 = Receiver("rr-stats-inet", domains=["x.test"], milter="unused",
               main={"smtpd_milters": "inet:127.0.0.1:%d" % port})
ok(pf2.start(), "postfix with the TCP milter starts")
replies, final = txn(pf2.port, ["a@x.test", "b@x.test"])
is_([r.decode() for r in replies], ["250 2.1.5 Ok", "452 4.5.3 " + TEXT],
    "over TCP: 250, then 452 4.5.3")
ok(final is not None and final.startswith(b"250"),
   "over TCP: the message is taken")

# --- what crosses the TCP socket: a proxy between smtpd and the milter
px = Proxy(port)
pf3 = Receiver("rr-proxy", domains=["x.test"], milter="unused",
               main={"smtpd_milters": "inet:127.0.0.1:%d" % px.port})
ok(pf3.start(), "postfix with the milter behind the proxy starts")
txn(pf3.port, ["a@x.test", "b@x.test"])
s3 = Smtp(pf3.port)
s3.cmd("EHLO client.test")
for i in range(3):                      # three messages, one connection
    s3.message("sender@client.test", ["m%d@x.test" % i])
s3.close()
pf3.stop()
rrtest.wait_until(lambda: len(px.conns) >= 2, 10, what="2 proxied")
twice, seen = [], []
for log in px.conns:
    turns = [(who, commands(data)) for who, data in log]
    seen.append(" ".join("%s:%s" % (w[0:3], c) for w, c in turns))
    for (w1, c1), (w2, c2) in zip(turns, turns[1:]):
        # the last packet of a session (Q: quit) gets no reply by design
        if w1 == w2 == "mta" and not c2.startswith("Q"):
            twice.append((c1, c2))
ok(len(px.conns) >= 2 and not twice,
   "smtpd never wrote twice without the milter's reply between",
   "%r\n%s" % (twice, "\n".join(seen)))
first = [c for w, c in (t for t in [(w, commands(x)) for w, x in
                                    px.conns[0]]) if w == "mta"]
ok(len(first) > 1 and "C" in first[1] and "M" in first[1] and
   "R" in first[1], "CONNECT and MAIL went with the RCPT event "
   "(no replies of their own)", repr(first))

pf.stop()
pf2.stop()
is_(milter.stop(), 0, "SIGTERM: exit 0")
is_(tm.stop(), 0, "TCP milter, SIGTERM: exit 0")
ok(milter.sanitizer_free() and tm.sanitizer_free(), "no sanitizer reports")
done()
