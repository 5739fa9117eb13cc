"""lmtpclient - rapidretry-agent --lmtp started as spawn(8) starts it
(stdin, stdout and stderr all on one socket, the test user), and a small
LMTP client on the other end of that socket for the tests.
"""

import os
import socket
import subprocess
import time

import rrtest


class LmtpAgent:
    """LmtpAgent - one LMTP session with rapidretry-agent --lmtp."""

    def __init__(self, agent, extra_env=None, timeout=30):
        self.agent = agent
        self.sock, child = socket.socketpair()
        pw = rrtest.ensure_user()
        env = agent.env()
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [agent.binary, "--lmtp", "-c", agent.conf],
            stdin=child, stdout=child, stderr=child, env=env,
            cwd=agent.dir, user=pw.pw_uid, group=pw.pw_gid,
            extra_groups=[])
        child.close()
        self.buf = b""
        self.raw = b""          # every byte the agent wrote
        self.timeout = timeout
        rrtest.at_cleanup(self.kill)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except (socket.timeout, OSError):
            return False
        if not d:
            return False
        self.buf += d
        self.raw += d
        return True

    def line(self, timeout=None):
        """line - the next reply line without CRLF, None at EOF/timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def reply(self, timeout=None):
        """reply - one (multi-line) reply as a list of lines."""
        res = []
        while True:
            l = self.line(timeout)
            if l is None:
                return res
            res.append(l)
            if len(l) < 4 or l[3] != "-":
                return res

    def cmd(self, line, timeout=None):
        """cmd - send one command, return its reply's text (lines joined
        with newlines)."""
        self.send(line + "\r\n")
        return "\n".join(self.reply(timeout))

    def replies(self, n, timeout=None):
        """replies - N one-line replies (fewer at EOF)."""
        res = []
        for _ in range(n):
            l = self.line(timeout)
            if l is None:
                break
            res.append(l)
        return res

    def eof(self, timeout=None):
        """eof - the agent closed the socket (and nothing else came)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        return time.monotonic() < deadline

    def wait(self, timeout=None):
        """wait - the agent's exit status (None if still running)."""
        try:
            return self.proc.wait(timeout or self.timeout)
        except subprocess.TimeoutExpired:
            return None

    def transaction(self, sender, rcpts, message, ident=None,
                    mail_params="", rcpt_params=""):
        """transaction - XFORWARD (with IDENT), MAIL, RCPTs and the
        message pipelined; returns (MAIL reply, [RCPT replies], DATA
        reply, [final replies])."""
        cmds = []
        if ident:
            cmds.append("XFORWARD IDENT=%s" % ident)
        cmds.append("MAIL FROM:<%s>%s" % (sender, mail_params))
        cmds += ["RCPT TO:<%s>%s" % (r, rcpt_params) for r in rcpts]
        cmds.append("DATA")
        self.send("".join(c + "\r\n" for c in cmds))
        if ident:
            self.reply()
        mail = "\n".join(self.reply())
        rr = ["\n".join(self.reply()) for _ in rcpts]
        data = "\n".join(self.reply())
        if not data.startswith("354"):
            return mail, rr, data, []
        self.send(stuff(message) + ".\r\n")
        n = len([r for r in rr if r.startswith("2")])
        return mail, rr, data, self.replies(n, timeout=self.timeout + 30)


def stuff(message):
    """stuff - LF message -> CRLF, dot-stuffed DATA (without the end)."""
    out = []
    for l in message.split("\n")[:-1] if message.endswith("\n") \
            else message.split("\n"):
        out.append(("." + l if l.startswith(".") else l) + "\r\n")
    return "".join(out)
