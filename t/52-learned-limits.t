#!/usr/bin/env python3
# 52-learned-limits.t - limits learned in one run are stored with a time
# and used by later runs until limits_expire: two messages in a
# row to a limit-3 receiver; the second one's first transaction carries
# exactly 3 RCPTs, and no 452 crosses the wire. An expired limit is
# learned again.
import os
import sqlite3
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink, TOO_MANY

rrtest.require_root()
rrtest.agent_binary()

sink = SmtpSink({"rcpt_max": 3})
port = sink.start()
rrtest.at_cleanup(sink.stop)
agent = rrtest.Agent(relay="[127.0.0.1]:%d" % port)
DB = agent.journal[:-3] + "-log.db"
RC = ["r%d@d1.test" % i for i in range(1, 8)]


def conn_txns(conn):
    return [r for c, r in sink.transactions() if c == conn]


def refused(conn):
    return [e for e in sink.replies(conn) if e["line"].startswith("452")]


res = agent.run(RC, queue_id="L1")
is_(res.rc, 0, "message 1: exit 0")
is_([len(t) for t in conn_txns(1)], [7, 3, 1],
    "message 1: the first transaction offers all 7 and learns 3")
ok(refused(1), "message 1: the receiver answered 452")
res = agent.run(RC, queue_id="L2")
is_(res.rc, 0, "message 2: exit 0")
is_([len(t) for t in conn_txns(2)], [3, 3, 1],
    "message 2: exactly 3 RCPTs in its first transaction, 3+3+1")
is_(refused(2), [], "message 2: no 452 on the wire")
ok([l for l in agent.log_lines() if "L2:" in l and "learned earlier" in l],
   "message 2: the log says it used the stored limit")
db = sqlite3.connect(DB)
is_(db.execute("SELECT server, rcpt_limit, one_domain FROM limits")
    .fetchall(), [("127.0.0.1:%d" % port, 3, 0)],
    "the limits table holds server, limit 3, time")
db.execute("UPDATE limits SET time = time - 2 * 86400")
db.commit()
db.close()
res = agent.run(RC, queue_id="L3")
is_([len(t) for t in conn_txns(3)][:1], [7],
    "message 3: a limit older than limits_expire (1d) is not used")
is_(sorted(sink.delivered()), sorted(RC * 3),
    "every recipient of the three messages delivered exactly once each")
done()
