"""rrmilter - rapidretry-milter for the tests: the built binary, the daemon
in the foreground in its own directory (config, class map, socket, log),
and a raw SMTP client that keeps every reply byte for byte, to talk to the
Postfix smtpd in front of it (postfix.Receiver(milter=...)). Loopback
only, no fixed sleeps."""

import os
import signal
import socket
import subprocess

import rrtest

# the milter's default reply text (DESIGN.md §8)
REPLY = ("451 4.5.3 Use PRDR or retry immediately, possibly in the same TCP "
         "connection, after DATA End of data; retry=0")


def binary():
    """binary - path of the built milter; skips the file when it is not
    built (or RR_BUILD is not set)."""
    p = os.path.join(rrtest.build_dir(), "milter", "rapidretry-milter")
    if not os.access(p, os.X_OK):
        rrtest.skip_all("milter not built: %s" % p)
    return p


class Milter:
    """Milter - rapidretry-milter in the foreground on a unix socket in
    DIR, run as nobody:postfix so smtpd (user postfix) can reach the
    socket; stopped at exit."""

    def __init__(self, d, conf, classes=None, name="milter", spec=None):
        self.dir = d
        self.conf = os.path.join(d, name + ".conf")
        self.socket = os.path.join(d, name + ".sock")
        # SPEC: another socket, e.g. "inet:PORT@127.0.0.1"
        self.spec = spec or "unix:" + self.socket
        self.log = os.path.join(d, name + ".log")
        self.write_conf(conf, classes)
        self.proc = None
        self.logf = None
        rrtest.at_cleanup(self.stop)

    def write_conf(self, conf, classes=None):
        """write_conf - the config file and, if given, DIR/classes."""
        if classes is not None:
            rrtest.write_file(os.path.join(self.dir, "classes"), classes)
        rrtest.write_file(self.conf, conf)

    def launch(self, extra=()):
        """launch - run it and return at once (its pid in self.proc)."""
        cmd = [binary(), "-f", "-p", self.spec, "-c", self.conf,
               "-u", "nobody:postfix"] + list(extra)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf,
                                     stderr=subprocess.STDOUT)

    def start(self, extra=()):
        """start - run it; True once it logged `started:` (once more than
        before, when it is started again)."""
        n = self.read_log().count("started:")
        self.launch(extra)
        up = rrtest.wait_until(lambda: self.proc.poll() is not None or
                               self.read_log().count("started:") > n, 15,
                               what="milter start")
        return bool(up) and self.proc.poll() is None

    def read_log(self):
        """read_log - everything the milter wrote (stdout and stderr)."""
        return rrtest.read_file(self.log)

    def signal(self, sig):
        """signal - send SIG if it runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def reload(self, conf, expect="configuration reloaded", classes=None):
        """reload - a new config (and class map) by SIGHUP; True once the
        milter logged EXPECT once more than before."""
        n = self.read_log().count(expect)
        self.write_conf(conf, classes)
        self.signal(signal.SIGHUP)
        return rrtest.wait_until(
            lambda: self.read_log().count(expect) > n, 10,
            what="milter log: %s" % expect)

    def stop(self, timeout=15):
        """stop - SIGTERM and wait (libmilter notices within 5 s); its
        exit status."""
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
        """kill - SIGKILL (the MTA's view of a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def sanitizer_free(self):
        """sanitizer_free - no ASan/UBSan report in the milter's output."""
        return not rrtest.sanitizer_report(self.read_log())


class Smtp:
    """Smtp - a raw SMTP client on 127.0.0.1:PORT: every reply kept
    exactly as received."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""
        self.transcript = []
        self.greeting = self.reply()

    def line(self):
        """line - one reply line without its CRLF."""
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """reply - one (possibly multi-line) reply, as the raw bytes of its
        lines joined with CRLF."""
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
        """cmd - send one command line; its reply."""
        self.transcript.append(b"C: " + text.encode())
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def message(self, sender, rcpts, body="Subject: test\r\n\r\nhello\r\n",
                rcpt_args=None):
        """message - one transaction; (RCPT replies, final reply or
        None)."""
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
        """close - QUIT (whatever the reply) and close."""
        try:
            self.cmd("QUIT")
        except (OSError, EOFError):
            pass
        self.sock.close()
