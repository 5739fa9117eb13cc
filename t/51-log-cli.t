#!/usr/bin/env python3
# 51-log-cli.t - the delivery log and rapidretry-log (DESIGN §7): rows
# per recipient and attempt from real agent runs against the scripted
# server, --transcript, --json, --stats, time filters, transcript =
# on-failure, a read-only database, and usage errors (exit 64).
import json
import os
import shutil
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()
CLI = os.path.join(rrtest.build_dir(), "agent", "rapidretry-log")
if not os.access(CLI, os.X_OK):
    rrtest.skip_all("rapidretry-log not built")

REJECT = "550 5.1.1 <bad@d1.test>: Recipient address rejected: User unknown"
sink = SmtpSink({"rules": [{"cmd": "RCPT", "addr": "bad@d1.test",
                            "reply": REJECT}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
relay = "[127.0.0.1]:%d" % port
agent = rrtest.Agent(relay=relay, extra_text="[log]\ntranscript = yes\n"
                     "[dsn]\nsendmail = /bin/sh -c \"cat >/dev/null\"\n")
DB = agent.journal[:-3] + "-log.db"


def cli(*args, user=None):
    if user:
        env = {"PATH": "/bin"}
        if rrtest.ASAN:
            env.update(rrtest.asan_options())
        r = rrtest.run_as_user([CLI] + list(args), b"", env)
        return r.rc, r.out, r.err
    p = subprocess.run([CLI] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


res = agent.run(["a@d1.test", "bad@d1.test", "c@d1.test"], queue_id="Q1A")
is_(res.rc, 0, "run Q1A: exit 0 (one bounced, DSN to a stand-in)")
ok(os.path.exists(DB), "the delivery log is beside the journal: %s" % DB)
for f in (agent.journal, DB):
    mode = os.stat(f).st_mode & 0o777 if os.path.exists(f) else None
    is_(mode is not None and mode & 0o007, 0,
        "%s is not readable by other users (mode %s): it holds addresses "
        "and transcripts" % (os.path.basename(f), oct(mode or 0)))

rc, out, err = cli("-d", DB, "-q", "Q1A")
is_(rc, 0, "-q: exit 0")
lines = out.splitlines()
is_(len(lines), 3, "-q: one row per recipient")
bad = [l for l in lines if "<bad@d1.test>" in l]
ok(bad and "bounced" in bad[0] and "5.1.1" in bad[0] and
   "[DSN sent]" in bad[0], "-q: the bounced row, its DSN code and note")
like(bad[0] if bad else "", r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d tx=1 "
     % port, "-q: relay and transaction number")
rc, out, err = cli("-d", DB, "-r", "BAD@D1.TEST")
is_((rc, len(out.splitlines())), (0, 1), "-r matches in any case")
rc, out, err = cli("-d", DB, "-r", "*@d1.test", "--status", "sent")
is_((rc, len(out.splitlines())), (0, 2), "-r with * and --status sent")
rc, out, err = cli("-d", DB, "-q", "Q1A", "--transcript")
like(out, r"(?m)^    > RCPT TO:<bad@d1\.test>$", "--transcript: commands")
like(out, r"(?m)^    < 550 5\.1\.1 <bad@d1\.test>", "--transcript: replies")
like(out, r"\(message body, \d+ octets\)", "--transcript: no body, a note")
ok("Hello." not in out, "--transcript: the message text is not stored")
is_(out.count("> EHLO"), 1, "--transcript: one connection printed once")

rc, out, err = cli("-d", DB, "-q", "Q1A", "--json", "--transcript")
try:
    rows = json.loads(out)
except ValueError as e:
    rows = None
    diag("json: %s: %r" % (e, out[:500]))
ok(isinstance(rows, list) and len(rows) == 3, "--json parses: 3 rows")
if rows:
    r = [x for x in rows if x["recipient"] == "bad@d1.test"][0]
    is_((r["status"], r["dsn"], r["queue_id"], r["sender"]),
        ("bounced", "5.1.1", "Q1A", "sender@src.test"), "--json: fields")
    like(r["reply"], "550 5.1.1", "--json: the reply text")
    ok(any(l.startswith("< 550 5.1.1") for l in r["transcript"]),
       "--json: transcript lines")
rc, out, err = cli("-d", DB, "--stats", "--json")
try:
    st = json.loads(out)
except ValueError:
    st = {}
is_(st.get("status"), {"bounced": 1, "sent": 2}, "--stats --json: counts")
rc, out, err = cli("-d", DB, "--stats")
like(out, r"(?m)^bounced\s+1$", "--stats: table")
rc, out, err = cli("-d", DB, "--since", "1h")
is_(len(out.splitlines()), 3, "--since 1h: the rows")
rc, out, err = cli("-d", DB, "--until", "2000-01-01")
is_((rc, out), (1, ""), "--until 2000-01-01: nothing, exit 1")
rc, out, err = cli("-d", DB, "--json", "-q", "NOSUCH")
is_((rc, out.strip()), (1, "[]"), "--json with no match: [] and exit 1")

# --- transcript = on-failure ---------------------------------------------
agent.write_conf(extra_text="[log]\ntranscript = on-failure\n"
                 "[dsn]\nsendmail = /bin/sh -c \"cat >/dev/null\"\n")
agent.run(["a@d1.test", "c@d1.test"], queue_id="Q2B")
agent.run(["a@d1.test", "bad@d1.test"], queue_id="Q3C")
rc, out, err = cli("-d", DB, "-q", "Q2B", "--json", "--transcript")
rows = json.loads(out) if rc == 0 else []
ok(rows and all(r["transcript"] is None for r in rows),
   "on-failure: no transcript when everyone was delivered")
rc, out, err = cli("-d", DB, "-q", "Q3C", "--json", "--transcript")
rows = json.loads(out) if rc == 0 else []
ok(rows and all(r["transcript"] for r in rows),
   "on-failure: the transcript is kept when one bounced")

# --- a read-only copy, read by an unprivileged user -----------------------
ro = rrtest.subdir("ro", mode=0o755)
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(DB + suffix):
        shutil.copy(DB + suffix, os.path.join(ro, "log.db" + suffix))
        os.chmod(os.path.join(ro, "log.db" + suffix), 0o444)
rc, out, err = cli("-d", os.path.join(ro, "log.db"), "-q", "Q1A",
                   user=rrtest.TEST_USER)
is_((rc, len(out.splitlines())), (0, 3), "a read-only database is read")

# --- usage errors ------------------------------------------------------------
for args, what in ((["--bogus"], "unknown option"),
                   (["--since", "yesterday-ish"], "bad time"),
                   (["--status", "lost"], "bad status"),
                   (["-n", "-3"], "negative limit"),
                   (["extra"], "stray argument")):
    rc, out, err = cli("-d", DB, *args)
    ok(rc == 64 and out == "" and "--help" in err,
       "usage error (%s): exit 64, usage hint on stderr" % what)
rc, out, err = cli("-d", os.path.join(ro, "nonexistent.db"))
is_(rc, 66, "a missing database: exit 66")
like(err, r"^rapidretry-log: cannot open", "... with a message on stderr")

# hostile rows: times no clock can show (a cast to an integer is UB)
import sqlite3
db = sqlite3.connect(DB)
db.executemany("INSERT INTO attempts (time, run, queue_id, sender, recipient,"
               " status, delay) VALUES (?, 'r', 'QH', 's@x.test', ?, 'sent',"
               " ?)", [(1e300, "h1@x.test", 0.5),
                       (-1e300, "h2@x.test", 0.5),
                       (float("-inf"), "h3@x.test", float("inf")),
                       (float("inf"), "h4@x.test", float("-inf"))])
db.commit()
db.close()
rc, out, err = cli("-d", DB, "-q", "QH")
is_((rc, err, len(out.splitlines())), (0, "", 4),
    "times 1e300, -1e300, -inf, inf: exit 0, nothing on stderr, 4 rows")
ok(all(l.startswith("? ") for l in out.splitlines()),
   "... their time shown as '?'", out)
rc, out, err = cli("-d", DB, "-q", "QH", "--json")
try:
    rows = json.loads(out or "[]", parse_constant=lambda c: 1 / 0)
except (ValueError, ZeroDivisionError) as e:
    diag("--json with infinities: %s: %r" % (e, out[:300]))
    rows = []
is_((rc, err, sorted(r["time"] for r in rows)), (0, "", ["?"] * 4),
    "... and in --json (strict JSON: no Infinity/NaN)")
is_(sorted((r["recipient"], r["epoch"], r["delay"]) for r in rows
           if r["recipient"] in ("h3@x.test", "h4@x.test")),
    [("h3@x.test", None, None), ("h4@x.test", None, None)],
    "... infinite epoch and delay are null")
# the installed layout: rapidretry-log in its own directory, the TLS
# module beside the agent only; a client certificate in the agent's
# configuration must not make the log unreadable (it reads the file for
# the database's path, and never connects)
import tlsca
cert, key = tlsca.CA("log").server("client", ["client.test"])
sbin = rrtest.subdir("sbin")
cli_alone = os.path.join(sbin, "rapidretry-log")
shutil.copyfile(CLI, cli_alone)
os.chmod(cli_alone, 0o755)
ok(not os.path.exists(os.path.join(sbin, "rapidretry-tls.so")),
   "no TLS module beside the copied rapidretry-log")
tls_conf = rrtest.write_file(os.path.join(sbin, "tls.conf"),
                             "[log]\ndatabase = %s\n[tls]\ncert_file = %s\n"
                             "key_file = %s\n" % (DB, cert, key))
p = subprocess.run([cli_alone, "-c", tls_conf, "-q", "Q1A"],
                   capture_output=True, text=True)
is_((p.returncode, p.stderr, len(p.stdout.splitlines())), (0, "", 3),
    "client certificate configured, no module beside rapidretry-log: "
    "exit 0, the 3 rows of Q1A")
rrtest.write_file(tls_conf, "[log]\ndatabase = %s\n[tls]\ncert_file = %s\n"
                  % (DB, os.path.join(sbin, "missing.pem")))
p = subprocess.run([cli_alone, "-c", tls_conf, "-q", "Q1A"],
                   capture_output=True, text=True)
is_(p.returncode, 78, "a cert_file that cannot be read is still a "
    "configuration error (78)")
like(p.stderr, r"cert_file .*missing\.pem", "... naming the file")
done()
