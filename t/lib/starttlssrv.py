"""starttlssrv - a small SMTP server on 127.0.0.1 for the STARTTLS tests.

StartTlsServer(hostname) offers STARTTLS (until the session is encrypted)
and accepts mail; a subclass decides how STARTTLS is answered (starttls()).
It records every command as (connection number, line) in .commands, the
RCPT addresses of completed messages in .accepted, and the number of
connections in .conns. Stopped when the test file ends.
"""

import re
import socket
import threading

import rrtest


class StartTlsServer:
    """StartTlsServer - the server; starttls() is the subclass's part."""

    def __init__(self, hostname="starttls.test"):
        self.hostname = hostname
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.accepted = []   # RCPT addresses of completed messages
        self.commands = []   # (conn, line)
        self.open = []
        self.stopped = False
        threading.Thread(target=self._loop, daemon=True).start()
        rrtest.at_cleanup(self.stop)

    def stop(self):
        self.stopped = True
        for s in self.open + [self.sock]:
            try:
                s.close()
            except OSError:
                pass

    def starttls(self, c, f, n, say):
        """starttls - answer STARTTLS on connection N (socket C, its
        reader F, SAY sends one reply line in clear text): the socket to
        go on with (a TLS one once encrypted, C to stay in clear text), or
        None to close the connection."""
        raise NotImplementedError

    def _loop(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            self.open.append(c)
            threading.Thread(target=self._conn, args=(c, self.conns),
                             daemon=True).start()

    def _conn(self, c, n):
        cur = [c]
        f = c.makefile("rb")
        rcpts = []
        tls = False

        def say(line):
            cur[0].sendall(line.encode() + b"\r\n")
        try:
            say("220 %s ESMTP" % self.hostname)
            while True:
                raw = f.readline()
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.commands.append((n, line))
                verb = line.split(" ", 1)[0].split(":")[0].upper()
                if verb == "EHLO":
                    say("250-%s\r\n250-PIPELINING\r\n" % self.hostname
                        + ("" if tls else "250-STARTTLS\r\n")
                        + "250 ENHANCEDSTATUSCODES")
                elif verb == "STARTTLS":
                    nc = self.starttls(cur[0], f, n, say)
                    if nc is None:
                        return
                    if nc is not cur[0]:
                        cur[0] = nc
                        self.open.append(nc)
                        f = nc.makefile("rb")
                        tls = True
                elif verb in ("MAIL", "RSET"):
                    rcpts = []
                    say("250 2.0.0 Ok")
                elif verb == "NOOP":
                    say("250 2.0.0 Ok")
                elif verb == "RCPT":
                    rcpts.append(re.sub(r".*<(.*)>.*", r"\1", line))
                    say("250 2.1.5 Ok")
                elif verb == "DATA":
                    say("354 End data with <CR><LF>.<CR><LF>")
                    while True:
                        data = f.readline()
                        if not data:
                            return
                        if data.rstrip(b"\r\n") == b".":
                            break
                    self.accepted += rcpts
                    say("250 2.0.0 Ok: queued")
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Error: command not recognized")
        except OSError:              # ssl.SSLError is an OSError too
            pass
        finally:
            cur[0].close()
