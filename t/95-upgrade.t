#!/usr/bin/env python3
# 95-upgrade.t - journal and delivery log files made by released agents
# (t/fixtures, see make-fixtures.py) meet this program:
#  - the journal (schema 2) and log (schema 1) of an earlier release
#    (the issue16-* fixtures): upgraded in place to this
#    program's schemas, nothing lost: the recipients final in them are
#    skipped, only the others cross the wire;
#  - an older release's journal (schema 1): upgraded in place once, by 8
#    agents started at the same moment on the same file, its entries kept;
#  - a journal of a newer schema (a downgrade): every run defers 4.3.5 and
#    says why; the file is not touched and nothing is sent;
#  - a delivery log of a newer schema never blocks a delivery;
#  - rapidretry-log reads a schema 1 log without the fleet's fallbacks.
import os
import shutil
import sqlite3
import subprocess
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()
FIX = os.path.join(TOP, "t", "fixtures")
MSG = rrtest.read_file(os.path.join(FIX, "message.eml"))
ALL = ["f%d@d1.test" % i for i in range(1, 6)]

sink = SmtpSink()
port = sink.start()
rrtest.at_cleanup(sink.stop)


def fresh(name, journal=None, log=None):
    """fresh - an agent whose journal (and delivery log) start as copies
    of fixture files"""
    # the fixtures' rows carry the day they were made: expiry and
    # retention must not depend on how long ago that was
    a = rrtest.Agent(name=name, relay="[127.0.0.1]:%d" % port,
                     agent_extra={"journal_expire": "3650d"},
                     extra_text="\n[log]\nretention = 3650d\n")
    for fix, dst in ((journal, a.journal), (log, a.journal[:-3] + "-log.db")):
        if fix:
            shutil.copyfile(os.path.join(FIX, fix), dst)
            os.chown(dst, *rrtest.ensure_user()[2:4])
    return a


def query(path, sql):
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def received(mark):
    """received - recipients the sink got, of the messages whose body
    holds MARK (duplicates counted)"""
    return sorted(r for m in sink.messages() for r in m["rcpts"]
                  if mark in m["body"])


# the schema versions this program writes: those of a fresh run's files
cur = fresh("current")
is_(cur.run(["p1@d1.test"], queue_id="NOW1").rc, 0, "a run on new files")
JOURNAL_NOW = query(cur.journal, "PRAGMA user_version")[0][0]
LOG_NOW = query(cur.journal[:-3] + "-log.db", "PRAGMA user_version")[0][0]
ok(JOURNAL_NOW >= 2 and LOG_NOW >= 1, "this program writes journal schema "
   "%d, delivery log schema %d" % (JOURNAL_NOW, LOG_NOW))

# --- today's files ------------------------------------------------------------
a = fresh("today", "issue16-journal-v2.db", "issue16-log-v1.db")
before = query(a.journal, "SELECT queue_id, recipient, state FROM journal"
                          " ORDER BY recipient")
logrows = query(a.journal[:-3] + "-log.db", "SELECT count(*) FROM attempts")
res = a.run(ALL, queue_id="FIXTURE01", message=MSG)
is_(res.rc, 0, "today's journal: the retry of FIXTURE01 ends with 0")
is_(received("fixture01@src.test"), ["f3@d1.test"],
    "only f3 (deferred then) crosses the wire: f1, f4, f5 delivered and f2 "
    "bounced before are skipped")
like(res.out, r"delivered 1 recipients \(4 earlier\)", "the status line")
after = query(a.journal, "SELECT queue_id, recipient, state FROM journal"
                         " ORDER BY recipient")
is_([r for r in after if r[1] != "f3@d1.test"], before,
    "the journal's entries are kept")
is_(query(a.journal, "PRAGMA user_version"), [(JOURNAL_NOW,)],
    "the journal: schema 2 -> %d in place" % JOURNAL_NOW)
LOGDB = a.journal[:-3] + "-log.db"
is_(query(LOGDB, "PRAGMA user_version"), [(LOG_NOW,)],
    "the delivery log: schema 1 -> %d in place" % LOG_NOW)
is_(query(LOGDB, "SELECT count(*) FROM attempts")[0][0], logrows[0][0] + 1,
    "the delivery log keeps its rows and adds this run's")
is_(query(LOGDB, "SELECT count(*) FROM fleet_fallbacks"), [(0,)],
    "the delivery log's upgrade adds the fleet's fallback counters")

# rapidretry-log reads a log of schema 1 as it is (read-only): no
# fallback counters there, every reason 0, the file not touched
OLDLOG = os.path.join(a.dir, "v1-copy.db")
shutil.copyfile(os.path.join(FIX, "issue16-log-v1.db"), OLDLOG)
LOGCLI = os.path.join(os.path.dirname(rrtest.agent_binary()), "rapidretry-log")
p = subprocess.run([LOGCLI, "-d", OLDLOG, "--stats", "--prometheus"],
                   capture_output=True, text=True)
is_((p.returncode, p.stderr), (0, ""), "--prometheus on a schema 1 log")
ok('rapidretry_fleet_fallbacks_total{reason="timeout"} 0' in
   p.stdout.splitlines(), "the fallback counter as 0")
p = subprocess.run([LOGCLI, "-d", OLDLOG, "--stats"], capture_output=True,
                   text=True)
is_((p.returncode, "fleet fallbacks" in p.stdout), (0, False),
    "--stats on it: no fallback line")
is_(query(OLDLOG, "PRAGMA user_version"), [(1,)], "and it stays schema 1")

# --- an older release's journal, 8 agents at once -----------------------------
old = fresh("old", "3817fe6-journal-v1.db")
is_(query(old.journal, "PRAGMA user_version"), [(1,)],
    "the older release's journal has schema 1")
pw = rrtest.ensure_user()
procs = []
for i in range(8):
    rc = ["f1@d1.test", "f2@d1.test", "f3@d1.test"] if i == 0 else \
        ["u%d@d1.test" % i]
    msg = MSG if i == 0 else rrtest.sample_message("s@src.test", rc)
    qid = "FIXTURE01" if i == 0 else "UP%02d" % i
    argv = [old.binary, "-c", old.conf, "-i", qid, "-n",
            "[127.0.0.1]:%d" % port, "-f", "s@src.test", "--"] + rc
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=old.env(), cwd=old.dir,
                         user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    procs.append((p, msg))
outs = []
for p, msg in procs:
    out, err = p.communicate(msg.encode(), timeout=60)
    outs.append((p.returncode, out.decode().strip(), err.decode()))
is_([o[0] for o in outs], [0] * 8, "8 agents at once on it: all exit 0")
for o in outs:
    if o[0] != 0:
        diag(repr(o))
is_(query(old.journal, "PRAGMA user_version"), [(JOURNAL_NOW,)],
    "upgraded in place to schema %d" % JOURNAL_NOW)
cols = [r[1] for r in query(old.journal, "PRAGMA table_info(journal)")]
is_(cols.count("dsn_sent"), 1, "the new column added once")
is_(received("fixture01@src.test"),
    ["f2@d1.test", "f3@d1.test", "f3@d1.test"],
    "FIXTURE01 again (f3 once before, from today's journal test): f1 "
    "(final in the old journal) skipped, f2 and f3 (not final there) sent")
is_(sorted(r for m in sink.messages() for r in m["rcpts"]
           if r.startswith("u")), ["u%d@d1.test" % i for i in range(1, 8)],
    "the 7 other messages delivered once each")
is_(query(old.journal, "SELECT recipient, state FROM journal WHERE "
          "queue_id = 'FIXTURE01' AND recipient IN ('f4@d1.test', "
          "'f5@d1.test') ORDER BY recipient"),
    [("f4@d1.test", 1), ("f5@d1.test", 1)],
    "the older release's entries are kept")
is_(query(old.journal, "SELECT count(*) FROM journal WHERE dsn_sent != 0 "
          "AND queue_id = 'FIXTURE01' AND recipient = 'f1@d1.test'"), [(0,)],
    "old entries read dsn_sent 0 (the column's default)")

# --- a newer journal: an older program after a downgrade ----------------------
new = cur  # its journal is of this program's schema: one step newer
db = sqlite3.connect(new.journal)
db.execute("PRAGMA user_version = %d" % (JOURNAL_NOW + 1))
db.commit()
db.close()
rows = query(new.journal, "SELECT * FROM journal ORDER BY recipient")
n = len(sink.messages())
res = new.run(["n1@d1.test"], queue_id="NEWER1")
is_(res.rc, 75, "a journal of a newer schema: exit 75 (never a bounce)")
like(res.out, r"^4\.3\.5 .*schema version %d is newer than this program "
     r"knows \(%d\)" % (JOURNAL_NOW + 1, JOURNAL_NOW),
     "4.3.5, and the line says why")
like("\n".join(new.log_lines()), r"NEWER1: .*schema version %d is newer"
     % (JOURNAL_NOW + 1), "the log says it too")
is_(len(sink.messages()), n, "nothing was sent")
is_((query(new.journal, "PRAGMA user_version"),
     query(new.journal, "SELECT * FROM journal ORDER BY recipient")),
    ([(JOURNAL_NOW + 1,)], rows), "the newer journal is not touched")

# --- a newer delivery log never blocks a delivery -----------------------------
nl = fresh("newerlog", None, "issue16-log-v1.db")
LOGDB = nl.journal[:-3] + "-log.db"
db = sqlite3.connect(LOGDB)
db.execute("PRAGMA user_version = 99")
db.commit()
db.close()
lrows = query(LOGDB, "SELECT count(*) FROM attempts")
res = nl.run(["l1@d1.test"], queue_id="NEWLOG1")
is_(res.rc, 0, "a delivery log of a newer schema: the delivery goes on")
ok("l1@d1.test" in [r for m in sink.messages() for r in m["rcpts"]],
   "l1 delivered")
like("\n".join(nl.log_lines()), r"NEWLOG1: delivery log .*schema version "
     r"99 is newer", "a warning says why the log is not written")
is_((query(LOGDB, "PRAGMA user_version"),
     query(LOGDB, "SELECT count(*) FROM attempts")), ([(99,)], lrows),
    "the newer delivery log is not touched")
done()
