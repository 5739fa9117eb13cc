#!/usr/bin/env python3
# 53-db-faults.t - the delivery log never blocks or fails a delivery: a
# read-only, locked or corrupt log database -> delivered, the failure in
# the log. A journal that cannot be written -> defer (4.3.0), nothing
# sent. A DSN that cannot be submitted -> exit 75, the bounced recipient
# is not final; the next run bounces it again and sends one DSN.
import os
import sqlite3
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

sink = SmtpSink({"rules": [{"cmd": "RCPT", "addr_re": "^bad",
                            "reply": "550 5.1.1 User unknown"}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
_n = [0]


def fresh(extra=""):
    _n[0] += 1
    a = rrtest.Agent(name="a%d" % _n[0], relay="[127.0.0.1]:%d" % port,
                     extra_text=extra)
    a.logdb = a.journal[:-3] + "-log.db"
    return a


def delivered_ok(a, qid, what):
    rc = ["x%s@d1.test" % qid, "y%s@d1.test" % qid]
    t0 = time.monotonic()
    res = a.run(rc, queue_id=qid)
    took = time.monotonic() - t0
    good = is_(res.rc, 0, "%s: exit 0" % what)
    good &= ok(all(sink.rcpt_count(r) == 1 for r in rc) and
               sorted(r for m in sink.messages() for r in m["rcpts"]
                      if r in rc) == rc, "%s: delivered once each" % what)
    warn = [l for l in a.log_lines() if "delivery log" in l]
    good &= ok(warn, "%s: the failure is logged" % what)
    if not good:
        diag(repr(res))
        diag("\n".join(a.log_lines()))
    return warn, took


# --- read-only log database ---------------------------------------------------
a = fresh()
sqlite3.connect(a.logdb).close()            # owned by root: rrtest cannot write
os.chmod(a.logdb, 0o644)
warn, _ = delivered_ok(a, "RO1", "read-only log")
like(warn[0] if warn else "", r"read-only|readonly|cannot open",
     "read-only log: the reason is named")

# --- locked log database --------------------------------------------------------
a = fresh()
a.run(["warm@d1.test"], queue_id="LK0")     # creates the schema as rrtest
lock = sqlite3.connect(a.logdb, timeout=1, isolation_level=None)
lock.execute("BEGIN EXCLUSIVE")
warn, took = delivered_ok(a, "LK1", "locked log")
lock.execute("ROLLBACK")
lock.close()
like(warn[0] if warn else "", r"locked|busy", "locked log: database is locked")
ok(took < 10, "locked log: the run waits only the busy timeout (%.1fs)"
   % took)

# --- corrupt log database -------------------------------------------------------
a = fresh()
rrtest.write_file(a.logdb, "this is not a database\n" * 200, mode=0o666,
                  owner=rrtest.TEST_USER)
warn, _ = delivered_ok(a, "CO1", "corrupt log")
like(warn[0] if warn else "", r"not a database|malformed|corrupt",
     "corrupt log: the reason is named")

# --- journal not writable: defer, deliver nothing ------------------------------
a = fresh()
sqlite3.connect(a.journal).close()          # root-owned: read-only to rrtest
os.chmod(a.journal, 0o644)
res = a.run(["j1@d1.test"], queue_id="JR1")
is_(res.rc, 75, "journal not writable: exit 75")
like(res.out, r"^4\.3\.0 ", "journal not writable: 4.3.0")
is_(sink.rcpt_count("j1@d1.test"), 0, "journal not writable: not contacted")

# --- DSN submission fails, then works -------------------------------------------
a = fresh("[dsn]\nsendmail = /bin/false\n")
spool = rrtest.subdir("dsnspool", owner=rrtest.TEST_USER)
fake = rrtest.write_file(os.path.join(rrtest.tmpdir(), "fake-sendmail"),
                         "#!/bin/sh\necho \"$@\" > %s/args.$$\n"
                         "cat > %s/msg.$$\n" % (spool, spool), mode=0o755)
msg = rrtest.sample_message("s@src.test", [])
rc = ["ok1@d1.test", "bad1@d1.test"]
res = a.run(rc, queue_id="DS1", sender="s@src.test", message=msg)
is_(res.rc, 75, "sendmail fails: exit 75")
like(res.out, r"^4\.3\.0 .*notification to the sender could not be sent",
     "sendmail fails: the status says why")
a.write_conf(extra_text="[dsn]\nsendmail = %s -i\n" % fake)
res = a.run(rc, queue_id="DS1", sender="s@src.test", message=msg)
is_(res.rc, 0, "next run: exit 0")
is_(sink.rcpt_count("ok1@d1.test"), 1, "next run: ok1 not delivered again")
is_(sink.rcpt_count("bad1@d1.test"), 2, "next run: bad1 tried again")
args = [rrtest.read_file(os.path.join(spool, f))
        for f in sorted(os.listdir(spool)) if f.startswith("args.")]
is_(args, ["-i -f <> -- s@src.test\n"],
    "one DSN submitted, with the null sender, to the envelope sender")
res = a.run(rc, queue_id="DS1", sender="s@src.test", message=msg)
is_((res.rc, len([f for f in os.listdir(spool) if f.startswith("args.")])),
    (0, 1), "third run: everything final, no second DSN")
done()
