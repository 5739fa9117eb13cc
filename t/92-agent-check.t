#!/usr/bin/env python3
# 92-agent-check.t - rapidretry-agent -t [-c conf] [-u user]: prints every
# key of the schema with its effective value; checks as the user pipe(8)
# runs the agent as (the journal directory, the password file's owner and
# mode, CA files, routes, the DSN command) and against Postfix's
# master.cf (the service's user= and time limit); exit 0, or 78 with
# FILE:LINE.
# Each configuration error it finds is one a delivery would meet: the
# same file makes a delivery defer (4.x.x), never bounce.
import os
import re
import sqlite3
import subprocess
import sys
import time
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done

rrtest.require_root()
rrtest.agent_binary()

agent = rrtest.Agent(relay="[127.0.0.1]:%d" % rrtest.free_port())
U = rrtest.TEST_USER
D = agent.dir
JDIR = agent.journal_dir
ROOTDIR = rrtest.subdir("rootonly", mode=0o755)       # not writable by U
PW_OK = rrtest.write_file(os.path.join(D, "pw-ok"),
                          "[127.0.0.1]:2525 user:secret\n", mode=0o600,
                          owner=U)
PW_WIDE = rrtest.write_file(os.path.join(D, "pw-wide"),
                            "[127.0.0.1]:2525 user:secret\n", mode=0o644,
                            owner=U)
PW_ROOT = rrtest.write_file(os.path.join(ROOTDIR, "pw-root"),
                            "[127.0.0.1]:2525 user:secret\n", mode=0o600)
CA_ROOT = rrtest.write_file(os.path.join(ROOTDIR, "ca.pem"), "x\n",
                            mode=0o600)


def spec_keys():
    """spec_keys - [(section, key)] of agent/conf.c's schema"""
    src = rrtest.read_file(os.path.join(TOP, "agent", "conf.c"))
    return re.findall(r'\{"(\w+)", "(\w+)", CONF_\w+,', src)


n = [0]


def conf(body):
    """conf - a file whose line 1 is [agent] with the journal; BODY
    follows from line 3 on"""
    n[0] += 1
    path = os.path.join(D, "c%d.conf" % n[0])
    rrtest.write_file(path, "[agent]\njournal = %s/j.db\n%s"
                      % (JDIR, body), owner=U)
    return path


PFDIR = rrtest.subdir("postfix-etc")


def master(path, user=U, time_limit="1000s", service=True):
    """master - a Postfix configuration directory (only files: postconf
    reads them) whose master.cf runs the agent with PATH, as
    master.cf.example says"""
    rrtest.write_file(os.path.join(PFDIR, "main.cf"),
                      "compatibility_level = 3.6\nrapidretry_time_limit = "
                      "%s\n" % time_limit)
    rrtest.write_file(os.path.join(PFDIR, "master.cf"),
                      "smtp unix - - n - - smtp\n" + (
                          "rapidretry unix - n n - 50 pipe\n"
                          "  flags=q null_sender= user=%s\n"
                          "  argv=%s -c %s\n"
                          "  -i ${queue_id} -n ${nexthop} -f ${sender} -- "
                          "${recipient}\n" % (user, agent.binary, path)
                          if service else ""))
    # Postfix waits for a file written this very second to settle: 2 s
    past = time.time() - 10
    for f in ("main.cf", "master.cf"):
        os.utime(os.path.join(PFDIR, f), (past, past))


def check(path, user=U, as_user=False, pf=True):
    if pf:
        master(path)
    args = [agent.binary, "-t", "-c", path, "-p", PFDIR] + (
        ["-u", user] if user else [])
    if as_user:
        return rrtest.run_as_user(args, b"", agent.env())
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return rrtest.Result(p.returncode, p.stdout, p.stderr, 0)


def deliver(path):
    res = agent.run(["r1@d1.test"], conf=path, queue_id="C%d" % n[0])
    return res


# --- a good file: every key, effective values --------------------------------
good = conf("relay = [127.0.0.1]:2525\nlog_file = %s/agent.log\n"
            "[smtp]\nhelo_name = checker.test\n"
            "[sasl]\npassword_file = %s\n"
            "[routes]\nd2.test = relay:[127.0.0.2]:25\n" % (D, PW_OK))
r = check(good)
is_(r.rc, 0, "a good file: exit 0")
is_(r.err, "", "a good file: nothing on stderr")
shown = re.findall(r"^(\w+) = ", r.out, re.M)
want = [k for s, k in spec_keys() if k != "pattern"]
is_(sorted(set(shown) - {"d2.test"}), sorted(set(want)),
    "every key of the schema is printed (%d)" % len(want))
like(r.out, r"(?m)^\[smtp\]\nhelo_name = checker\.test$",
     "a value that was set")
like(r.out, r"(?m)^deadline = 900s$", "a default as its effective value")
like(r.out, r"(?m)^database = %s/j-log\.db$" % re.escape(JDIR),
     "a derived value: the delivery log beside the journal")
like(r.out, r"(?m)^\[routes\]\nd2\.test = relay:\[127\.0\.0\.2\]:25$",
     "[routes] as written")

# --- errors with FILE:LINE ----------------------------------------------------
CASES = [
    ("journal directory not writable by the user",
     "[agent]\njournal = %s/j.db\n" % ROOTDIR, 4, r"\[agent\] journal: "
     r"directory %s: Permission denied" % re.escape(ROOTDIR)),
    ("journal directory missing", "[agent]\njournal = /nonexistent/j.db\n",
     4, r"directory /nonexistent does not exist"),
    ("password file mode 0644", "[sasl]\npassword_file = %s\n" % PW_WIDE, 4,
     r"\[sasl\] password_file: .*mode"),
    ("password file owned by root, checked as %s" % U,
     "[sasl]\npassword_file = %s\n" % PW_ROOT, 4,
     r"\[sasl\] password_file: "),
    ("CA file the user cannot read",
     "[tls]\nca_file = %s\nsecurity_level = none\n" % CA_ROOT, 4,
     r"\[tls\] ca_file: %s: Permission denied" % re.escape(CA_ROOT)),
    ("route syntax", "[routes]\nd1.test = relay:[127.0.0.1:25\n", 4, r""),
    ("relay syntax", "relay = [nope\n", 3, r"\[agent\] relay: "),
    ("unknown key", "[smtp]\nhelo_nmae = x\n", 4, r"helo_nmae"),
    ("bad value", "[smtp]\nrcpt_limit = many\n", 4, r"rcpt_limit"),
    ("DSN command missing",
     "[dsn]\nsendmail = /nonexistent/sendmail -i\n", 4,
     r"\[dsn\] sendmail: /nonexistent/sendmail"),
    ("log file the user cannot write",
     "log_file = %s/agent.log\n" % ROOTDIR, 3, r"\[agent\] log_file: "),
]
for name, body, line, rx in CASES:
    path = conf(body)
    r = check(path)
    is_(r.rc, 78, "%s: exit 78" % name)
    like(r.err, r"(?m)^%s:%d: .*%s" % (re.escape(path), line, rx),
         "%s: FILE:LINE on stderr" % name)
    res = deliver(path)
    like(res.out, r"^4\.\d+\.\d+ ", "%s: a delivery with it defers" % name)

# the same password file, owned by the user the check runs as: fine
r = check(conf("[sasl]\npassword_file = %s\n" % PW_OK))
is_(r.rc, 0, "password file 0600 owned by the checking user: exit 0")
r = check(good, user=None)
is_(r.rc, 0, "root without -u: checks as master.cf's user= (%s)" % U)
like(r.out, r"(?m)^# master\.cf: service rapidretry, user=%s, "
     r"rapidretry_time_limit = 1000s$" % U, "... and shows the service")

# master.cf: the deadline must end before pipe(8)'s time limit
master(good, time_limit="900s")
r = check(good, pf=False)
is_(r.rc, 78, "deadline 900s, rapidretry_time_limit 900s: exit 78")
like(r.err, r"(?m)^%s: \[agent\] deadline: 900s \(\+30s grace\) is not "
     r"below rapidretry_time_limit = 900s" % re.escape(good),
     "... pipe(8) would kill the agent: said with the service's limit")
path = conf("deadline = 600s\n")
master(path, time_limit="900s")
is_(check(path, pf=False).rc, 0, "deadline 600s below 900s: exit 0")
master(path, service=False)
r = check(path, pf=False)
is_(r.rc, 0, "no service in master.cf runs this file: exit 0 ...")
like(r.err, r"warning: .*no pipe\(8\) service in Postfix's master\.cf "
     r"runs rapidretry-agent -c %s" % re.escape(path), "... with a warning")
r = check(good, user="root")
is_(r.rc, 78, "-u root: pipe(8) never runs a command as root")
r = check(good, user="nobody", as_user=True)
is_(r.rc, 77, "not root: cannot check as another user")
r = check(good, user=None, as_user=True)
is_(r.rc, 0, "not root, no -u: checks as oneself")

# the delivery log is best effort: a warning, exit 0
r = check(conf("[log]\ndatabase = %s/log.db\n" % ROOTDIR))
is_(r.rc, 0, "delivery log not writable: exit 0")
like(r.err, r"^warning: .*:4: \[log\] database: .*deliveries go on",
     "... with a warning naming the line")

# the TLS module beside the executable: checked when a level may use TLS
nomod = rrtest.Agent(name="nomod", tls_module=False)
for body, want in (("", True), ("[tls]\nsecurity_level = none\n", False)):
    path = conf(body)
    args = [nomod.binary, "-t", "-c", path, "-p", PFDIR, "-u", U]
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if want:
        is_(p.returncode, 78, "no TLS module at level may: exit 78")
        like(p.stderr, r"\[tls\] security_level: cannot load the TLS "
             r"module: %s/rapidretry-tls\.so: .*every STARTTLS would "
             r"defer with 4\.7\.5" % re.escape(nomod.dir),
             "... naming the module and what a delivery would meet")
    else:
        ok("TLS module" not in p.stderr,
           "no TLS module at level none: not needed, not checked")
r = check(conf(""))
ok(r.rc == 0 and "TLS module" not in r.err,
   "with the module beside the agent: no complaint")

# a journal of a newer schema
jdb = sqlite3.connect(os.path.join(JDIR, "j.db"))
jdb.execute("PRAGMA user_version = 99")
jdb.commit()
jdb.close()
path = conf("")
r = check(path)
is_(r.rc, 78, "a journal of a newer schema: exit 78")
like(r.err, r":2: \[agent\] journal: .*schema version 99 is newer",
     "... and says why")
os.unlink(os.path.join(JDIR, "j.db"))
done()
