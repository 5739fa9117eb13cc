"""lmtpsender - a throw-away sending Postfix that hands its mail to
rapidretry in LMTP mode (DESIGN §9): a dedicated lmtp client service
"rapidretry" -> unix socket private/rapidretry-lmtp -> spawn(8) ->
rapidretry-agent --lmtp, as master.cf.example shows it; with daemon=True
the same client -> the same socket -> rapidretry-agent --lmtp-daemon
(started as root, as systemd would, running as the test user).
"""

import os
import re
import signal
import smtplib
import socket
import subprocess

import rrtest
from postfix import QID, Sender

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def master_lmtp(user, binary, conf):
    """master_lmtp - master.cf.example's LMTP-mode lines (commented out
    there), uncommented, with the test's user and paths: the tests run
    the example as written."""
    text = rrtest.read_file(os.path.join(TOP, "master.cf.example"))
    part = text.split("sending side in LMTP mode", 1)[1]
    part = part[part.index("\n#rapidretry") + 1:]
    lines = [l[1:] for l in part.splitlines()
             if re.match(r"#(rapidretry|  \S)", l)]
    out = "\n".join(lines) + "\n"
    return (out.replace("/usr/local/libexec/rapidretry/rapidretry-agent",
                        binary)
            .replace("/etc/rapidretry/rapidretry.conf", conf)
            .replace("user=rapidretry", "user=" + user))


def without_spawn(master):
    """without_spawn - MASTER's lines less the rapidretry-lmtp spawn(8)
    service: what --lmtp-daemon mode keeps of master.cf.example."""
    out, skip = [], False
    for line in master.splitlines():
        if not line.startswith(" "):
            skip = line.startswith("rapidretry-lmtp ")
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n"


def sockets(pid):
    """sockets - the socket inodes PID holds open."""
    res = set()
    try:
        for f in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, f))
            except OSError:
                continue
            if link.startswith("socket:"):
                res.add(link)
    except OSError:
        pass
    return res


class LmtpDaemon:
    """LmtpDaemon - rapidretry-agent --lmtp-daemon with AGENT's config
    plus [lmtp] listen = unix:SOCK, workers, user = the test user."""

    def __init__(self, agent, sock, workers=4, env=None, lmtp_extra=None):
        self.agent, self.sock, self.proc = agent, sock, None
        self.env = dict(env or {})
        extra = dict(listen="unix:" + sock, workers=str(workers),
                     user=rrtest.TEST_USER)
        extra.update(lmtp_extra or {})
        self.lmtp = extra
        self.write_conf()

    def write_conf(self, **changes):
        """write_conf - the agent's config with the [lmtp] lines."""
        self.lmtp.update(changes)
        text = self.agent.settings.get("extra_text", "")
        text = text.split("\n# lmtp-daemon\n")[0]
        text += "\n# lmtp-daemon\n[lmtp]\n" + "".join(
            "%s = %s\n" % kv for kv in self.lmtp.items())
        self.agent.write_conf(extra_text=text)

    def start(self):
        """start - run it, wait until it answers on the socket."""
        env = self.agent.env()
        if rrtest.ASAN:
            env.update(rrtest.asan_options())
        env.update(self.env)
        self.proc = subprocess.Popen(
            [self.agent.binary, "--lmtp-daemon", "-c", self.agent.conf],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rrtest.at_cleanup(self.stop)
        if not rrtest.wait_until(self.answers, 20,
                                 what="--lmtp-daemon on " + self.sock):
            rrtest.bail("--lmtp-daemon did not start: %s" % (
                self.proc.stderr.read(4000) if self.proc.poll() is not None
                else "no answer"))
        return self

    def answers(self):
        """answers - a connection to the socket gets a 220 greeting."""
        try:
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(5)
                c.connect(self.sock)
                return c.recv(512).startswith(b"220 ")
        except OSError:
            return False

    def pids(self):
        """pids - the parent's and its workers' process ids."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [self.proc.pid] + [int(p) for p in out.split()]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=40):
        """stop - SIGTERM and wait; the exit status (None if killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


class LmtpSender(Sender):
    """LmtpSender - default_transport = rapidretry:unix:private/rapidretry-
    lmtp; ENV (dict) goes to the agent through spawn(8)."""

    def __init__(self, name="sender", relay_port=None, agent=None,
                 main=None, env=None, daemon=False, workers=4):
        super().__init__(name, relay_port=relay_port or 25, smtp=True)
        rrtest.ensure_user()
        self.agent = agent or rrtest.Agent(
            name=name + "/agent", relay="[127.0.0.1]:%d" % relay_port)
        a = self.agent
        self.master_extra = master_lmtp(rrtest.TEST_USER, a.binary, a.conf)
        self.daemon = None
        if daemon:
            self.master_extra = without_spawn(self.master_extra)
            self.daemon = LmtpDaemon(
                a, os.path.join(self.queue, "private", "rapidretry-lmtp"),
                workers=workers, env=env)
        self.main.update({
            "default_transport":
                "rapidretry:unix:private/rapidretry-lmtp",
            "relayhost": "",
            # spawn(8)'s time limit for the service, set explicitly: the
            # agent's [lmtp] time_limit says the same
            "rapidretry-lmtp_time_limit": "1000s",
        })
        env = dict(env or {})
        if rrtest.ASAN:
            env.update(rrtest.asan_options())
        if env:
            self.pass_environment(env)
        self.main.update(main or {})

    def start(self):
        """start - Postfix, then (daemon mode) the daemon in its
        private/ directory."""
        super().start()
        if self.daemon:
            self.daemon.start()
        return self

    def stop(self):
        if self.daemon:
            self.daemon.stop()
        super().stop()

    def submit_smtp(self, sender, rcpts, message=None, mail_options=(),
                    rcpt_options=()):
        """submit_smtp - through the sender's own smtpd, so its lmtp
        client has client attributes to send with XFORWARD (IDENT among
        them); returns the queue id."""
        if message is None:
            message = rrtest.sample_message(sender, rcpts)
        mark = self.mark()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.test")
            c.sendmail(sender, list(rcpts), message.encode(),
                       list(mail_options), list(rcpt_options))
        lines = self.wait_log(r"smtpd\[\d+\]: %s: client=" % QID, since=mark)
        m = re.search(r": (%s): client=" % QID, lines[0]) if lines else None
        return m.group(1) if m else None
