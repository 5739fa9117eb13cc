"""rrtest - shared helpers for rapidretry's integration tests.

TAP output, temporary directories, loopback ports, polling with a
deadline, the unprivileged `rrtest` user the agent runs as, the agent
binary and its config file, and the environment knobs:

  RR_BUILD   absolute build directory ($RR_BUILD/agent/rapidretry-agent)
  RR_ASAN=1  the agent is a sanitizer build: its reports go to
             <tmpdir>/asan/asan.* and any such file fails the test
  RR_KEEP=1  keep temporary directories (their path is printed)
"""

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# --- TAP -------------------------------------------------------------------

_count = 0
_failed = 0
_planned = None
_done = False
_cleanups = []          # callables run at exit, last registered first


def plan(n):
    """plan - announce the number of tests up front (optional)."""
    global _planned
    _planned = n
    print("1..%d" % n, flush=True)


def diag(msg):
    """diag - a TAP comment line (shown by prove -v)."""
    for line in str(msg).splitlines() or [""]:
        print("# " + line, flush=True)


def ok(cond, name="", detail=None):
    """ok - one test point; returns the condition. DETAIL (any value) is
    shown as a comment when it fails."""
    global _count, _failed
    _count += 1
    name = name.replace("#", "\\#")
    if cond:
        print("ok %d - %s" % (_count, name), flush=True)
    else:
        _failed += 1
        print("not ok %d - %s" % (_count, name), flush=True)
        if detail is not None:
            diag(detail)
    return bool(cond)


def is_(got, want, name=""):
    """is_ - equality with the values shown on failure."""
    r = ok(got == want, name)
    if not r:
        diag("     got: %r" % (got,))
        diag("expected: %r" % (want,))
    return r


def like(got, regex, name=""):
    """like - regular expression search with the value shown on failure."""
    r = ok(got is not None and re.search(regex, got) is not None, name)
    if not r:
        diag("     got: %r" % (got,))
        diag("expected: /%s/" % regex)
    return r


def skip(reason, count=1):
    """skip - count skipped test points."""
    global _count
    for _ in range(count):
        _count += 1
        print("ok %d # skip %s" % (_count, reason), flush=True)


def skip_all(reason):
    """skip_all - skip the whole file."""
    global _done
    print("1..0 # SKIP %s" % reason, flush=True)
    _done = True
    sys.exit(0)


def bail(reason):
    """bail - stop the whole run (set-up cannot work)."""
    global _done
    print("Bail out! %s" % reason, flush=True)
    _done = True
    sys.exit(255)


def done():
    """done - final checks, the plan (if not given) and the exit status."""
    global _done
    _asan_check()
    if _planned is None:
        print("1..%d" % _count, flush=True)
    elif _planned != _count:
        diag("planned %d tests but ran %d" % (_planned, _count))
        sys.exit(255)
    _done = True
    sys.exit(min(_failed, 254))


# --- cleanup -----------------------------------------------------------------

def at_cleanup(fn):
    """at_cleanup - run fn at exit (also on failures and SIGTERM)."""
    _cleanups.append(fn)
    return fn


def _run_cleanups():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:          # cleanup must go on
            print("# cleanup: %s" % e, flush=True)
    if not _done:
        print("# test ended early (exception or missing done())", flush=True)


def _on_signal(signum, frame):
    sys.exit(128 + signum)


atexit.register(_run_cleanups)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def _excepthook(tp, val, tb):
    global _done
    _done = True
    import traceback
    for line in traceback.format_exception(tp, val, tb):
        diag(line.rstrip("\n"))
    ok(False, "test script died: %s" % val)
    if _planned is None:
        print("1..%d" % _count, flush=True)
    sys.stdout.flush()
    _run_cleanups()
    os._exit(255)


sys.excepthook = _excepthook

# --- environment -------------------------------------------------------------

TEST_USER = "rrtest"
ASAN = os.environ.get("RR_ASAN") == "1"
KEEP = os.environ.get("RR_KEEP") == "1"
_tmp_root = None


def require_root():
    """require_root - Postfix instances and the test user need root."""
    if os.geteuid() != 0:
        skip_all("needs root (throw-away Postfix instances)")


def build_dir():
    """build_dir - $RR_BUILD, or skip the file when it is not set."""
    b = os.environ.get("RR_BUILD")
    if not b:
        skip_all("RR_BUILD not set (run through make check)")
    if not os.path.isabs(b):
        bail("RR_BUILD must be an absolute path: %s" % b)
    return b


def agent_binary():
    """agent_binary - path of the built agent (skip when not built)."""
    p = os.path.join(build_dir(), "agent", "rapidretry-agent")
    if not os.access(p, os.X_OK):
        skip_all("agent not built: %s" % p)
    return p


def tmpdir():
    """tmpdir - this test's private directory (0755), removed at exit."""
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = tempfile.mkdtemp(prefix="rrtest-")
        os.chmod(_tmp_root, 0o755)
        os.makedirs(os.path.join(_tmp_root, "asan"))
        os.chmod(os.path.join(_tmp_root, "asan"), 0o1777)

        def rm():
            if KEEP:
                diag("kept %s" % _tmp_root)
            else:
                shutil.rmtree(_tmp_root, ignore_errors=True)
        # registered first: runs last, after instances are stopped
        _cleanups.insert(0, rm)
    return _tmp_root


def subdir(name, owner=None, mode=0o755):
    """subdir - a directory inside tmpdir(), optionally owned by a user."""
    d = os.path.join(tmpdir(), name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, mode)
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def asan_options():
    """asan_options - sanitizer options that write reports to tmpdir."""
    log = os.path.join(tmpdir(), "asan", "asan")
    a = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    u = os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return {"ASAN_OPTIONS": a + ":log_path=" + log,
            "UBSAN_OPTIONS": u + ":log_path=" + log}


def sanitizer_report(text):
    """sanitizer_report - TEXT holds an ASan, LeakSanitizer or UBSan
    report."""
    return any(x in text for x in ("ERROR: AddressSanitizer",
                                   "ERROR: LeakSanitizer",
                                   "runtime error:"))


# callables returning text (a Postfix instance's maillog) where a
# program's stderr ends up: UBSan (with ASan, gcc) ignores log_path
_report_sources = []


def report_source(fn):
    """report_source - FN() returns text to search for sanitizer reports
    at done() (RR_ASAN=1)."""
    _report_sources.append(fn)


def _asan_check():
    if not ASAN or _tmp_root is None:
        return
    reports = glob.glob(os.path.join(_tmp_root, "asan", "asan*"))
    texts = [t for t in (fn() for fn in _report_sources)
             if sanitizer_report(t)]
    ok(not reports and not texts, "no sanitizer reports")
    for r in reports:
        with open(r, errors="replace") as f:
            diag(f.read()[:4000])
    for t in texts:
        diag(t[-4000:])


def ensure_user():
    """ensure_user - the unprivileged user the agent runs as (pipe(8)
    refuses root and mail_owner)."""
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home",
                        "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", TEST_USER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pw = pwd.getpwnam(TEST_USER)    # another run may have made it
    return pw


def free_port():
    """free_port - a loopback TCP port that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_listening(port):
    """port_listening - a TCP socket listens on PORT (read from /proc, so
    no probe connection shows up in a server's log)."""
    want = ":%04X" % port
    for line in read_file("/proc/net/tcp").splitlines()[1:]:
        f = line.split()
        if f[1].endswith(want) and f[3] == "0A":
            return True
    return False


def wait_until(pred, timeout=20.0, interval=0.05, what=None):
    """wait_until - poll pred() until true or timeout; returns its value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            if what:
                diag("timed out after %.0fs waiting for %s" % (timeout, what))
            return v
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def write_file(path, text, mode=0o644, owner=None):
    """write_file - write text, set its mode and owner."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def read_file(path):
    """read_file - file contents, "" when missing."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# --- the agent ---------------------------------------------------------------

TIMEOUT_KEYS = ("connect_timeout", "helo_timeout", "mail_timeout",
                "rcpt_timeout", "data_init_timeout", "data_xfer_timeout",
                "data_done_timeout", "rset_timeout", "quit_timeout")


class Agent:
    """Agent - a copy of the agent binary plus its config, journal and log
    in a directory the test user can use."""

    def __init__(self, name="agent", relay="[127.0.0.1]:25", deadline="30s",
                 helo_name="sender.test", timeouts=None, rcpt_limit=0,
                 agent_extra=None, smtp_extra=None, extra_text="",
                 dsn_sendmail='/bin/sh -c "cat >/dev/null"',
                 tls_module=True):
        ensure_user()
        self.dir = subdir(name, owner=TEST_USER)
        self.binary = os.path.join(self.dir, "rapidretry-agent")
        shutil.copyfile(agent_binary(), self.binary)
        os.chmod(self.binary, 0o755)
        # the TLS module is loaded from beside the executable only
        if tls_module:
            shutil.copyfile(os.path.join(os.path.dirname(agent_binary()),
                                         "rapidretry-tls.so"),
                            os.path.join(self.dir, "rapidretry-tls.so"))
        self.journal_dir = subdir(name + "/journal", owner=TEST_USER)
        self.journal = os.path.join(self.journal_dir, "journal.db")
        self.log_file = os.path.join(self.dir, "agent.log")
        self.conf = os.path.join(self.dir, "rapidretry.conf")
        self.settings = dict(relay=relay, deadline=deadline,
                             helo_name=helo_name, timeouts=timeouts or {},
                             rcpt_limit=rcpt_limit,
                             agent_extra=agent_extra or {},
                             smtp_extra=smtp_extra or {},
                             extra_text=extra_text,
                             dsn_sendmail=dsn_sendmail)
        self.write_conf()

    def write_conf(self, **changes):
        """write_conf - (re)write the config file, with changes."""
        s = self.settings
        s.update(changes)
        lines = ["[agent]",
                 "relay = %s" % s["relay"],
                 "journal = %s" % self.journal,
                 "deadline = %s" % s["deadline"],
                 "log_file = %s" % self.log_file]
        lines += ["%s = %s" % kv for kv in s["agent_extra"].items()]
        lines += ["", "[smtp]",
                  "helo_name = %s" % s["helo_name"],
                  "rcpt_limit = %d" % s["rcpt_limit"]]
        t = {k: "10s" for k in TIMEOUT_KEYS}
        t.update(s["timeouts"])
        lines += ["%s = %s" % (k, t[k]) for k in TIMEOUT_KEYS]
        lines += ["%s = %s" % kv for kv in s["smtp_extra"].items()]
        if s["dsn_sendmail"]:
            # a test agent's DSNs must never reach this machine's own
            # Postfix: only tests that read DSNs back submit them
            lines += ["", "[dsn]", "sendmail = %s" % s["dsn_sendmail"]]
        write_file(self.conf, "\n".join(lines) + "\n" + s["extra_text"],
                   owner=TEST_USER)
        return self.conf

    def env(self):
        """env - the environment pipe(8) would give the agent."""
        e = {"PATH": "/usr/bin:/bin", "LANG": "C"}
        if ASAN:
            e.update(asan_options())
        return e

    def run(self, rcpts, sender="sender@src.test", queue_id="4AB1C2D3E4",
            nexthop=None, message=None, args=None, conf=None, timeout=60):
        """run - start the agent as the test user like pipe(8) does;
        returns a Result (rc, out, err, elapsed)."""
        if args is None:
            args = ["-c", conf or self.conf, "-i", queue_id,
                    "-n", nexthop or self.settings["relay"],
                    "-f", sender, "--"] + list(rcpts)
        if message is None:
            message = sample_message(sender, rcpts)
        return run_as_user([self.binary] + args, message, self.env(),
                           cwd=self.dir, timeout=timeout)

    def run_extra(self, rcpts, port, extra_text, queue_id, **kw):
        """run_extra - one run to [127.0.0.1]:PORT with EXTRA_TEXT added to
        the config; checks the pipe(8) status line and returns (result,
        the agent's log lines of this run)."""
        self.write_conf(extra_text=extra_text)
        before = len(self.log_lines())
        res = self.run(rcpts, queue_id=queue_id,
                       nexthop="[127.0.0.1]:%d" % port, **kw)
        ok(status_line_ok(res), "%s: one stdout line, stderr empty"
           % queue_id)
        return res, self.log_lines()[before:]

    def log_lines(self):
        """log_lines - the agent's log file, one entry per line."""
        return read_file(self.log_file).splitlines()


class Result:
    """Result - what one agent run returned."""

    def __init__(self, rc, out, err, elapsed):
        self.rc, self.out, self.err, self.elapsed = rc, out, err, elapsed

    def __repr__(self):
        return "rc=%r out=%r err=%r elapsed=%.1fs" % (
            self.rc, self.out, self.err, self.elapsed)


def run_as_user(argv, stdin_bytes, env, cwd=None, timeout=60,
                user=TEST_USER):
    """run_as_user - run argv as the unprivileged user, stdin from bytes."""
    pw = ensure_user()
    if isinstance(stdin_bytes, str):
        stdin_bytes = stdin_bytes.encode()
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, input=stdin_bytes, capture_output=True,
                           env=env, cwd=cwd or "/", timeout=timeout,
                           user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, e.stdout or b"", e.stderr or b""
    err = err.decode(errors="replace")
    if ASAN and sanitizer_report(err):
        # UBSan's report is on stderr (log_path ignored): keep it for done()
        f, path = tempfile.mkstemp(prefix="asan.stderr.",
                                   dir=os.path.join(tmpdir(), "asan"))
        os.write(f, err.encode())
        os.close(f)
    return Result(rc, out.decode(errors="replace"), err,
                  time.monotonic() - t0)


def sample_message(sender, rcpts, subject="rapidretry test", body=None):
    """sample_message - an RFC 5322 message with LF line ends, including
    lines that need dot-stuffing."""
    if body is None:
        body = ("Hello.\n"
                ".a line that starts with a dot\n"
                "..two dots\n"
                ".\n"
                "last line\n")
    return ("From: <%s>\nTo: undisclosed-recipients:;\nSubject: %s\n"
            "Message-ID: <%d.%d@src.test>\n\n%s"
            % (sender, subject, os.getpid(), time.time_ns(), body))


def status_line_ok(res):
    """status_line_ok - exactly one line on stdout, nothing on stderr."""
    return (res.err == "" and res.out.endswith("\n")
            and res.out.count("\n") == 1)


def agent_status(lines, status=None, rcpt=None):
    """agent_status - per-recipient log lines, parsed:
    [(queue_id, rcpt, dsn, status, text)]."""
    rx = re.compile(r"rapidretry/agent\[\d+\]: (\S+): to=<([^>]*)>,.*"
                    r"dsn=(\S+), status=(\w+) ?(.*)$")
    res = []
    for line in lines:
        m = rx.search(line)
        if not m:
            continue
        q, r, d, s, t = m.groups()
        if status and s != status:
            continue
        if rcpt and r.lower() != rcpt.lower():
            continue
        res.append((q, r, d.rstrip(","), s, t))
    return res


def agent_pids(lines):
    """agent_pids - distinct agent process ids in log lines (invocations)."""
    return sorted(set(re.findall(r"rapidretry/agent\[(\d+)\]", "\n".join(
        lines))))
