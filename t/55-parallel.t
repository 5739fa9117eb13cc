#!/usr/bin/env python3
# 55-parallel.t - many agents at once on one journal and one delivery log,
# as Postfix runs up to maxproc of them (DESIGN §7): 20 agents at a time,
# 10 messages each, default configuration (delivery log on). Every message
# is delivered exactly once, no run defers or logs a locking error, the
# journal and the log hold one entry per recipient, the WAL files stay
# bounded, and a second round of the same batches delivers nothing again.
import os
import re
import sqlite3
import sys
import threading
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

AGENTS, MESSAGES = 20, 10
agent = rrtest.Agent(name="agent-parallel", deadline="60s")
LOG_DB = agent.journal[:-3] + "-log.db"
sink = SmtpSink({})
port = sink.start()
rrtest.at_cleanup(sink.stop)


def batch(w, m):
    """batch - (queue id, recipients, message) of agent W's message M."""
    qid = "%X" % (0x5A0000 + w * 0x100 + m)
    rcpts = ["r%d.%d.%d@d%d.test" % (w, m, i, i) for i in range(2)]
    return qid, rcpts, rrtest.sample_message("s@src.test", rcpts,
                                             subject="%s" % qid)


BATCHES = {(w, m): batch(w, m) for w in range(AGENTS)
           for m in range(MESSAGES)}
results = {}
lock = threading.Lock()


def worker(w, msgs):
    """worker - one pipe(8) slot: its agents one after another."""
    for m in msgs:
        qid, rcpts, msg = BATCHES[(w, m)]
        res = agent.run(rcpts, queue_id=qid, message=msg,
                        nexthop="[127.0.0.1]:%d" % port, timeout=120)
        with lock:
            results[(w, m)] = res


def round_of(msgs):
    """round_of - AGENTS workers at once, each running MSGS."""
    results.clear()
    threads = [threading.Thread(target=worker, args=(w, msgs))
               for w in range(AGENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(results)


def db_count(path, sql):
    """db_count - one number from a database file (read-only)."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def wal_size(path):
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


# --- 1. 20 agents at once, 10 messages each -----------------------------------
res1 = round_of(range(MESSAGES))
n = AGENTS * MESSAGES
bad = {k: r for k, r in res1.items()
       if r.rc != 0 or not r.out.startswith("2.0.0 ") or r.err}
is_(len(res1), n, "%d agent runs finished" % n)
if not is_(len(bad), 0, "every run: exit 0, 2.0.0, stderr empty"):
    for k, r in list(bad.items())[:5]:
        diag("%r: %r" % (k, r))
want = sorted(r for _, rcpts, _ in BATCHES.values() for r in rcpts)
got = sink.delivered()
is_(len(got), len(want), "%d recipients accepted by the server" % len(want))
is_(got, want, "each recipient exactly once (none lost, none twice)")
msgs = sink.messages()
is_(len(msgs), n, "one transaction per message")
log = agent.log_lines()
locking = [l for l in log if re.search(
    r"locked|busy|journal unusable|delivery log .*(cannot|failed)", l, re.I)]
if not is_(locking, [], "no locking error, no unusable journal or log"):
    for l in locking[:5]:
        diag(l)
deferred = [l for l in log if "status=deferred" in l]
is_(deferred, [], "no recipient deferred")
is_(db_count(agent.journal, "SELECT count(*) FROM journal"), len(want),
    "journal: one entry per recipient")
is_(db_count(LOG_DB, "SELECT count(*) FROM attempts WHERE status = 'sent'"),
    len(want), "delivery log: one sent row per recipient")
jw, lw = wal_size(agent.journal), wal_size(LOG_DB)
diag("WAL after %d runs: journal %d bytes, delivery log %d bytes"
     % (n, jw, lw))
# unchecked, the journal WAL grows by ~4 pages a run (3.2 MB here)
ok(jw < 1024 * 1024, "journal WAL bounded (%d bytes < 1 MB)" % jw)
ok(lw < 2 * 1024 * 1024, "delivery log WAL bounded (%d bytes < 2 MB)" % lw)

# --- 2. the same batches again, at once: all final, nothing sent -----------
res2 = round_of(range(2))
again = [k for k, r in res2.items()
         if r.rc != 0 or not re.match(r"2\.0\.0 .*\(2 earlier\)", r.out)]
if not is_(again, [], "a rerun of 40 batches at once: all 2.0.0, "
           "2 earlier, each"):
    for k in again[:5]:
        diag("%r: %r" % (k, res2[k]))
is_(len(sink.messages()), n, "the rerun sent nothing")
done()
