"""milter_pf - test helpers for rapidretry-milter: TAP output, the milter
daemon in a temp dir, a throw-away Postfix receiver (smtpd + virtual into
one catch-all Maildir) that uses it, and a raw SMTP client that keeps the
exact reply bytes. Loopback only, run-time ports, no fixed sleeps."""

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import postfix
import time

BUILD = os.environ.get("RR_BUILD", "")
MILTER = os.path.join(BUILD, "milter", "rapidretry-milter")
REPLY = ("451 4.5.3 Use PRDR or retry immediately, possibly in the same TCP "
         "connection, after DATA End of data; retry=0")


class Tap:
    """Minimal TAP producer; plan printed at the end."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, diag=None):
        self.n += 1
        print(("ok %d - %s" if cond else "not ok %d - %s") % (self.n, name))
        if not cond:
            self.failed += 1
            if diag is not None:
                for line in str(diag).splitlines():
                    print("#   " + line)
        sys.stdout.flush()
        return cond

    def eq(self, got, want, name):
        return self.ok(got == want, name, "got:  %r\nwant: %r" % (got, want))

    def diag(self, text):
        for line in str(text).splitlines():
            print("# " + line)

    def done(self):
        print("1..%d" % self.n)
        sys.exit(1 if self.failed else 0)

    def skip_all(self, why):
        print("1..0 # SKIP " + why)
        sys.exit(0)


def need_root(tap):
    if not BUILD or not os.path.exists(MILTER):
        tap.skip_all("no milter binary (run through make check)")
    if os.geteuid() != 0:
        tap.skip_all("needs root for a throw-away Postfix instance")
    if not shutil.which("postfix"):
        tap.skip_all("postfix not installed")


def wait_for(pred, timeout=15.0, step=0.02):
    """Poll PRED until it is true or TIMEOUT passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


class Milter:
    """rapidretry-milter in the foreground on a unix socket in DIR, run as
    nobody:postfix so smtpd (user postfix) can reach the socket."""

    def __init__(self, d, conf, classes=None, name="milter"):
        self.dir = d
        self.conf = os.path.join(d, name + ".conf")
        self.socket = os.path.join(d, name + ".sock")
        self.log = os.path.join(d, name + ".log")
        self.write_conf(conf, classes)
        self.proc = None

    def write_conf(self, conf, classes=None):
        if classes is not None:
            with open(os.path.join(self.dir, "classes"), "w") as f:
                f.write(classes)
            os.chmod(os.path.join(self.dir, "classes"), 0o644)
        with open(self.conf, "w") as f:
            f.write(conf)
        os.chmod(self.conf, 0o644)

    def start(self, extra=()):
        cmd = [MILTER, "-f", "-p", "unix:" + self.socket, "-c", self.conf,
               "-u", "nobody:postfix"] + list(extra)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        ok = wait_for(lambda: self.proc.poll() is not None or
                      "started:" in self.read_log())
        return bool(ok) and self.proc.poll() is None

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=15):
        """SIGTERM and wait (libmilter notices within 5 s); its status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# the services every test instance runs (postfix.py), plus smtpd and tlsmgr
MASTER_CF = ("{port} inet n - n - - smtpd\n"
             "tlsmgr    unix - - n 1000? 1 tlsmgr\n" + postfix.MASTER_CF)


class Postfix:
    """A receiving Postfix: smtpd on 127.0.0.1:PORT with our milter,
    virtual delivery of every test domain into DIR/mail/all/ (Maildir)."""

    def __init__(self, d, milter_socket, domains, extra=None):
        self.dir = d
        self.port = free_port()
        self.etc = os.path.join(d, "etc")
        for sub in ("etc", "queue", "data", "log", "mail"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            os.chmod(os.path.join(d, sub), 0o755)
        pw = pwd.getpwnam("postfix")
        os.chown(os.path.join(d, "data"), pw.pw_uid, pw.pw_gid)
        nobody = pwd.getpwnam("nobody")
        os.chown(os.path.join(d, "mail"), nobody.pw_uid, nobody.pw_gid)
        conf = {
            "compatibility_level": "3.6",
            "queue_directory": os.path.join(d, "queue"),
            "data_directory": os.path.join(d, "data"),
            "myhostname": "rr-milter.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_auth_destination, reject",
            "smtpd_peername_lookup": "no",
            "maillog_file": os.path.join(d, "log", "maillog"),
            "maillog_file_prefixes": d,
            "syslog_name": "rrmilter-test",
            "alias_maps": "",
            "alias_database": "",
            "default_transport": "discard",
            "virtual_mailbox_domains": " ".join(domains),
            "virtual_mailbox_base": os.path.join(d, "mail"),
            "virtual_mailbox_maps": "static:all/",
            "virtual_uid_maps": "static:%d" % nobody.pw_uid,
            "virtual_gid_maps": "static:%d" % nobody.pw_gid,
            "virtual_minimum_uid": "1",
            # the receiving side of main.cf.example
            "smtpd_milters": "unix:" + milter_socket,
            "milter_default_action": "accept",
            "milter_protocol": "6",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
        }
        conf.update(extra or {})
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port="127.0.0.1:%d" % self.port))
        self.started = False

    def postfix(self, *args):
        return subprocess.run(["postfix", "-c", self.etc] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True)

    def start(self):
        r = self.postfix("start")
        if r.returncode != 0:
            return r.stdout + self.log()
        self.started = True

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return True
            except OSError:
                return False
        if not wait_for(up):
            return "smtpd does not answer\n" + self.log()
        return None

    def log(self):
        try:
            with open(os.path.join(self.dir, "log", "maillog"),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if not self.started:
            return
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")
        try:
            pid = int(open(pidfile).read().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        self.postfix("stop")
        if pid is not None:
            def gone():
                try:
                    os.kill(pid, 0)
                    return False
                except ProcessLookupError:
                    return True
            if not wait_for(gone, 10):
                os.kill(pid, signal.SIGKILL)
        self.started = False

    def delivered(self):
        """Delivered-To addresses in the Maildir, sorted."""
        out = []
        base = os.path.join(self.dir, "mail", "all")
        for sub in ("new", "cur"):
            p = os.path.join(base, sub)
            if not os.path.isdir(p):
                continue
            for name in os.listdir(p):
                with open(os.path.join(p, name), errors="replace") as f:
                    for line in f:
                        if line.lower().startswith("delivered-to:"):
                            out.append(line.split(":", 1)[1].strip())
                        if line in ("\n", "\r\n"):
                            break
        return sorted(out)

    def wait_delivered(self, n, timeout=15):
        wait_for(lambda: len(self.delivered()) >= n, timeout)
        return self.delivered()


class Smtp:
    """A raw SMTP client: every reply kept exactly as received."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""
        self.transcript = []
        self.greeting = self.reply()

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One (possibly multi-line) reply, as the raw bytes of its lines
        joined with CRLF."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        raw = b"\r\n".join(lines)
        self.transcript.append(b"S: " + raw)
        return raw

    def cmd(self, text):
        self.transcript.append(b"C: " + text.encode())
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def message(self, sender, rcpts, body="Subject: test\r\n\r\nhello\r\n",
                rcpt_args=None):
        """One transaction; (RCPT replies, final reply or None)."""
        self.cmd("MAIL FROM:<%s>" % sender)
        replies = []
        for i, r in enumerate(rcpts):
            args = rcpt_args[i] if rcpt_args else ""
            replies.append(self.cmd("RCPT TO:<%s>%s" % (r, args)))
        if not any(x.startswith(b"250") for x in replies):
            self.cmd("RSET")
            return replies, None
        if not self.cmd("DATA").startswith(b"354"):
            return replies, None
        self.sock.sendall(body.encode() + b".\r\n")
        return replies, self.reply()

    def close(self):
        try:
            self.cmd("QUIT")
        except (OSError, EOFError):
            pass
        self.sock.close()
