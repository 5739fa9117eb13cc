#!/usr/bin/env python3
"""46-milter-reply-stats.t - rapidretry-milter behind a real Postfix
smtpd: `reply_code = 452` puts "452 4.5.3 TEXT" on the wire (451 stays
the default, and a SIGHUP switches between them), and `stats_file` is
rewritten every stats_interval in the Prometheus text format with the
counters of what crossed the wire: transactions, transactions with a
deferral, accepted and deferred recipients. The milter over TCP
(inet:PORT@127.0.0.1) answers like over the UNIX socket."""

import os
import sys

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

pf.stop()
pf2.stop()
is_(milter.stop(), 0, "SIGTERM: exit 0")
is_(tm.stop(), 0, "TCP milter, SIGTERM: exit 0")
ok(milter.sanitizer_free() and tm.sanitizer_free(), "no sanitizer reports")
done()
