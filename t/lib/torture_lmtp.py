#!/usr/bin/env python3
"""torture_lmtp - the fault campaign for LMTP mode (DESIGN §9): a
resident rapidretry-agent --lmtp driven as Postfix's lmtp client drives
it, 2-4 messages per LMTP session (pipelined RCPTs), with the server
faults of t/lib/torture.py (drop, stall, garbage, 452/250 mixes) and
LMTP-side faults: the client vanishing before, during or right after
DATA; SIGKILL or SIGTERM of the agent in the middle of a message;
spawn(8)'s time limit (family spawn: the agent's own limit 71s with a
10s deadline, so it stops taking mail after 1s, and SIGKILL from the
harness at a random moment up to 1.5s, as spawn kills at its limit); and
the same message handed to a second agent over a second connection
while the first still delivers it to a server that stalls for the first
(family concurrent, both agents on one journal); and (family daemon)
the same client on the unix socket of a resident rapidretry-agent
--lmtp-daemon (2 workers, the test user), with the server faults plus,
inside a message (before DATA, in DATA or after the final dot): SIGKILL
of the worker serving the session (the parent starts another), SIGHUP
of the parent (the message completes, then 421 4.3.2; new workers),
SIGTERM of the parent (421 4.3.2, exit 0, the socket gone, no worker
left; started again for the retries) or the client vanishing (the worker
goes back to accept); the daemon is stopped at the end of each scenario
and none of its processes may be left. In every family about
three messages in ten carry no queue id (no XFORWARD, or IDENT
[UNAVAILABLE], as for local submissions), so the journal keys them by
sender and digest. After the first session every message whose
recipients did not all get a final answer (2xx or 5xx) is handed over
again in a new session with the same bytes and queue id, as Postfix
retries it, to the server now well-behaved, at most 5 times.

Invariants:
  answered    every accepted RCPT of every message a session handed over
              in full got exactly one reply after the DATA, naming it
  consistent  a 2xx reply: the server has the recipient (in this or an
              earlier attempt); a 5xx: it never took it
  lost        every recipient ends taken or refused with 5xx
  duplicate   nothing taken twice, except in the window no client can
              close (a SIGKILL or the client gone between the final dot and
              the journal, a dot reply lost): counted as "window"; in
              family concurrent the second agent must defer (4xx) what
              the first is delivering, never send it again
  margin      family spawn: MAIL before the agent's margin gets 250, MAIL
              well after it never does (421, or the agent hung up), and
              an agent that said 421 ends by itself
  daemon      family daemon: after SIGHUP the message under way gets all
              its replies, then 421 4.3.2 and the end; after SIGTERM the
              session's last reply is 421 4.3.2 (in DATA the worker hangs
              up without it, as --lmtp does; a delivery under way answers
              all its recipients or none), exit 0, socket removed; a
              killed worker is replaced, a vanished client's worker goes
              idle; nothing of the daemon left after each scenario

Usage: torture_lmtp.py [--seed S] [-n N] [-j J]    (make torture-lmtp)
"""

import argparse
import collections
import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                   # noqa: E402
import torture                                  # noqa: E402
from lmtpclient import LmtpAgent, stuff         # noqa: E402
from lmtpsender import LmtpDaemon, sockets      # noqa: E402
from smtpsink import SmtpSink                   # noqa: E402

FAMILIES = ("server", "vanish", "kill", "mix", "spawn", "concurrent",
            "daemon")
RERUNS = 5
LMTP_CONF = ("\n[lmtp]\ndeadline = 10s\nidle_timeout = 5s\n"
             "[schedule]\nfailure_cohort = 0\n")
# spawn: time_limit - deadline - 60s (LMTP_AGE_MARGIN) = 1s of taking mail
SPAWN_LIMIT = 71
SPAWN_OPEN = SPAWN_LIMIT - 10 - 60
SENDER = "s@src.test"
DAEMON_WORKERS = 2
STAGES = ("before_data", "in_data", "after_data")


class Scenario:
    def __init__(self, seed):
        rng = random.Random(seed)
        self.seed = seed
        self.family = FAMILIES[seed % len(FAMILIES)]
        self.msgs = []
        for m in range(rng.randint(2, 4)):
            doms = ["d%d.test" % i for i in range(1, rng.randint(1, 3) + 1)]
            self.msgs.append({
                "qid": "L%07X%d" % (seed % 0xFFFFFFF, m),
                "rcpts": ["s%dm%dr%d@%s" % (seed, m, i, rng.choice(doms))
                          for i in range(rng.randint(1, 10))]})
        # the queue id or none, from a stream of its own: the draws of
        # the other faults stay what they were for a given seed
        irng = random.Random("ident:%d" % seed)
        for x in self.msgs:
            k = irng.random()
            x["ident"] = x["qid"] if k < 0.7 else \
                None if k < 0.85 else "[UNAVAILABLE]"
        self.script = {"rules": []}
        self.fault = None   # (kind, message index, detail)
        self.time_limit = None
        n = max(len(x["rcpts"]) for x in self.msgs)
        f = self.family
        if f in ("server", "mix") or (f == "daemon" and rng.random() < 0.4):
            r = torture.step_rule(rng, n)
            k = rng.random()
            if k < 0.4:
                r["action"] = "drop"
                if r["cmd"] == "DOT" and rng.random() < 0.5:
                    r["taken"] = True
            elif k < 0.6:
                r["action"] = "silent"
            elif k < 0.8:
                r["raw"] = torture.garbage(rng)
            else:
                r["reply"] = rng.choice(torture.REPLIES)[1]
            r["times"] = rng.randint(1, 2)
            self.script["rules"].append(r)
            if rng.random() < 0.3:
                self.script["rcpt_max"] = rng.randint(1, 4)
        if f == "vanish" or (f == "mix" and rng.random() < 0.5):
            self.fault = ("vanish", rng.randrange(len(self.msgs)),
                          rng.choice(("before_data", "in_data",
                                      "after_data")))
        if f == "kill":
            self.fault = ("kill", rng.randrange(len(self.msgs)),
                          (rng.choice((signal.SIGKILL, signal.SIGTERM)),
                           rng.uniform(0.0, 0.3)))
            self.script["rules"].append({"cmd": "DOT",
                                         "delay": rng.uniform(0.05, 0.3)})
        if f == "spawn":
            # the agent's margin, in every attempt; spawn's SIGKILL in the
            # first, before, at or after the agent stopped taking mail
            self.time_limit = SPAWN_LIMIT
            self.fault = ("spawn", None, rng.uniform(0.1, SPAWN_OPEN + 0.5))
            self.script["rules"].append({"cmd": "DOT",
                                         "delay": rng.uniform(0.05, 0.4)})
        if f == "concurrent":
            # the first agent's transaction of message C stalls at one
            # step (the server is fine otherwise, so it is transaction
            # C + 1); meanwhile a second agent gets the same message (same
            # bytes, same key); the first agent's client stays or is gone
            c = rng.randrange(len(self.msgs))
            step = rng.choice(("MAIL", "RCPT", "DATA", "DOT", "DOT"))
            r = {"cmd": step, "txn": c + 1, "times": 1,
                 "delay": rng.uniform(0.3, 1.0) if step == "DOT"
                 else rng.uniform(0.3, 1.5)}
            if step == "RCPT":
                r["rcpt"] = 1
            self.script["rules"].append(r)
            self.fault = ("concurrent", c,
                          (rng.uniform(0.05, 0.3), rng.random() < 0.3))
        if f == "daemon":
            # a worker killed, the parent reloaded or stopped, the client
            # gone, inside message D; after the dot while the agent
            # delivers (the server is slow to answer the dot)
            stage = rng.choice(STAGES)
            self.fault = ("daemon", rng.randrange(len(self.msgs)),
                          (rng.choice(("kill", "hup", "term", "vanish")),
                           stage, rng.uniform(0.0, 0.3)))
            if stage == "after_data":
                self.script["rules"].append(
                    {"cmd": "DOT", "delay": rng.uniform(0.05, 0.3)})

    def message(self, m):
        """message - message M, the same bytes in every attempt (as
        Postfix's queue file is)"""
        x = self.msgs[m]
        if "text" not in x:
            x["text"] = rrtest.sample_message(
                SENDER, x["rcpts"], subject="lmtp torture %d" % self.seed)
        return x["text"]

    def head(self, m, rcpts, data=True):
        """head - the commands of message M's transaction up to DATA"""
        ident = self.msgs[m]["ident"]
        cmds = ["XFORWARD IDENT=%s" % ident] if ident else []
        cmds += ["MAIL FROM:<%s>" % SENDER]
        cmds += ["RCPT TO:<%s>" % r for r in rcpts]
        return cmds + (["DATA"] if data else [])


def alive(pid):
    """alive - PID is a rapidretry-agent, not a zombie"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"rapidretry-agent" in cmd and \
        st.rsplit(") ", 1)[-1][:1] not in ("Z", "X", "")


class Daemon(LmtpDaemon):
    """Daemon - family daemon's --lmtp-daemon: the worker's agent and
    config, 2 workers as the test user, the socket in the agent's
    directory; every pid it ever had is kept (seen) so that none is
    left running"""

    def __init__(self, agent):
        super().__init__(agent, os.path.join(agent.dir, "lmtp.sock"),
                         workers=DAEMON_WORKERS)
        self.seen = set()
        self.gone = set()       # workers killed or told to end (SIGHUP)
        self.err = os.path.join(agent.dir, "daemon.err")

    def start(self):
        """start - run it; TRUE when it answers on the socket"""
        env = self.agent.env()
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [self.agent.binary, "--lmtp-daemon", "-c", self.agent.conf],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        ok = rrtest.wait_until(self.answers, 20)
        self.note()
        return ok

    def note(self):
        if self.proc is not None and self.proc.poll() is None:
            self.seen.update(self.pids())

    def workers(self):
        return [p for p in self.pids()[1:] if alive(p)]

    def busy(self):
        """busy - the workers in an LMTP session: holding a socket
        besides the listening one (the parent's only socket)"""
        lsock = sockets(self.proc.pid)
        return [p for p in self.workers() if sockets(p) - lsock]

    def serving(self):
        b = self.busy()
        return b[0] if len(b) == 1 else None

    def left(self):
        """left - the pids it had that still run"""
        return sorted(p for p in self.seen if alive(p))

    def stopped(self, why, timeout=30):
        """stopped - after SIGTERM (WHY): exit 0 within TIMEOUT, the
        socket removed, none of its processes left (those are killed);
        what was wrong"""
        fails = []
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = "none: running %ds" % timeout
        if rc != 0:
            fails.append("exit %s after %s" % (rc, why))
        if os.path.exists(self.sock):
            fails.append("socket left after %s" % why)
        if not rrtest.wait_until(lambda: not self.left(), 10):
            left = self.left()
            fails.append("pids %s left after %s" % (left, why))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return fails

    def finish(self):
        """finish - the end of a scenario: the workers killed or reloaded
        were replaced, then SIGTERM and nothing left; what was wrong"""
        if self.proc is None or self.proc.poll() is not None:
            return []
        fails = []
        if self.gone and not rrtest.wait_until(
                lambda: len(self.workers()) == DAEMON_WORKERS and
                not self.gone & set(self.workers()), 10):
            fails.append("workers %r 10s after the end of %r"
                         % (self.workers(), sorted(self.gone)))
        self.note()
        self.signal(signal.SIGTERM)
        return fails + self.stopped("the final SIGTERM")


class DaemonClient(LmtpAgent):
    """DaemonClient - the LMTP client on a connection to the daemon's
    socket (no agent process of its own): wait() waits for the worker to
    hang up"""

    def __init__(self, path, timeout=25):
        self.agent, self.proc = None, None
        self.buf = self.raw = b""
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX)
        try:
            self.sock.connect(path)
        except OSError:
            pass                # no greeting: the session does not open

    def wait(self, timeout=None):
        return 0 if self.eof(timeout) else None

    def kill(self):
        self.sock.close()

    def rest(self, timeout):
        """rest - every line up to the end of the connection (None:
        still open after TIMEOUT)"""
        lines = []
        end = time.monotonic() + timeout
        while True:
            line = self.line(max(0.01, end - time.monotonic()))
            if line is None:
                return lines if time.monotonic() < end else None
            lines.append(line)


class Session:
    """Session - one LMTP connection to a fresh agent, as spawn(8) starts
    it for Postfix's lmtp client (or CLIENT, on the daemon's socket);
    what came back is gathered per message"""

    def __init__(self, worker, client=None):
        self.s = client or LmtpAgent(worker.agent, timeout=25)
        self.t0 = time.monotonic()
        self.replies = {}       # (m, rcpt) -> reply; ("error", m) -> text
        self.full = []          # [(m, rcpts)] handed over in full
        self.hazard = set()
        self.mails = []         # [(seconds since start, MAIL reply)]
        self.killed_at = None
        self.busy = {}          # m -> (start, end or None)
        self.timer = None
        self.closed_421 = False
        self.kills = 0          # signals sent to the agent
        self.fails = []         # [(invariant, text)]

    def open(self):
        s = self.s
        try:
            return bool(s.reply()) and \
                s.cmd("LHLO postfix.test").startswith("250")
        except OSError:
            return False

    def kill_at(self, t):
        """kill_at - SIGKILL T seconds after the start, as spawn(8) does
        at its time limit (it kills the process group; the agent alone
        is in it here: no DSN submissions in this campaign)"""
        def fire():
            self.killed_at = time.monotonic() - self.t0
            self.kills += 1
            try:
                self.s.proc.kill()
            except OSError:
                pass
        self.timer = threading.Timer(max(0.0, t - (time.monotonic() -
                                                   self.t0)), fire)
        self.timer.daemon = True
        self.timer.start()

    def send_head(self, sc, m, rcpts):
        """send_head - the pipelined commands and the message with its
        dot, without reading; FALSE when the agent is gone already"""
        try:
            self.s.send("".join(c + "\r\n" for c in sc.head(m, rcpts)))
            time.sleep(0.02)
            self.s.send(stuff(sc.message(m)) + ".\r\n")
        except OSError:
            return False
        return True

    def read_transaction(self, sc, m, rcpts, t_mail):
        """read_transaction - the replies to a pipelined transaction of
        message M; FALSE when the session cannot go on"""
        s = self.s
        if sc.msgs[m]["ident"]:
            x = "\n".join(s.reply())
            if not x.startswith("250"):
                self.mails.append((t_mail, x))
                self.closed_421 |= x.startswith("421")
                return False
        mail = "\n".join(s.reply())
        self.mails.append((t_mail, mail))
        if not mail.startswith("250"):
            # 421 near the time limit: the session ends, nothing taken
            self.closed_421 |= mail.startswith("421")
            return False
        rr = ["\n".join(s.reply()) for _ in rcpts]
        data = "\n".join(s.reply())
        acc = [r for r, x in zip(rcpts, rr) if x.startswith("2")]
        for r, x in zip(rcpts, rr):
            if not x.startswith("2"):
                self.replies[(m, r)] = x
        final = s.replies(len(acc), timeout=s.timeout + 30) \
            if data.startswith("354") else []
        for r, line in zip(acc, final):  # in RCPT order
            self.replies[(m, r)] = line
        if self.killed_at is not None:
            return False
        if data.startswith("354") and len(final) != len(acc):
            self.replies[("error", m)] = "%d replies for %d accepted" % (
                len(final), len(acc))
        if "" in rr or data == "":
            self.replies[("error", m)] = "a command without a reply"
        self.full.append((m, rcpts))
        return True

    def transaction(self, sc, m, rcpts):
        """transaction - message M to RCPTS, all pipelined as Postfix's
        lmtp client does with PIPELINING; FALSE when the session ended"""
        t_mail = time.monotonic() - self.t0
        self.busy[m] = (t_mail, None)
        try:
            if not self.send_head(sc, m, rcpts):
                return False
            return self.read_transaction(sc, m, rcpts, t_mail)
        finally:
            self.busy[m] = (t_mail, time.monotonic() - self.t0)

    def vanish(self, sc, m, rcpts, detail):
        """vanish - the client goes away before, in or right after DATA;
        the agent ends by itself (its delivery, if any, finishes and is
        journaled) before Postfix would try again"""
        s = self.s
        cmds = sc.head(m, rcpts, data=detail != "before_data")
        s.send("".join(c + "\r\n" for c in cmds))
        msg = sc.message(m)
        if detail == "in_data":
            time.sleep(0.05)
            s.send(stuff(msg)[:len(msg) // 2])
        elif detail == "after_data":
            time.sleep(0.05)
            s.send(stuff(msg) + ".\r\n")
            time.sleep(random.uniform(0, 0.3))
        s.sock.close()
        if s.wait(40) is None:
            self.replies[("error", m)] = "agent still running 40s after " \
                                         "its client left"

    def signal(self, sc, m, rcpts, detail):
        """signal - SIGKILL or SIGTERM after the final dot"""
        s = self.s
        sig, delay = detail
        s.send("".join(c + "\r\n" for c in sc.head(m, rcpts)))
        time.sleep(0.05)
        s.send(stuff(sc.message(m)) + ".\r\n")
        time.sleep(delay)
        s.proc.send_signal(sig)
        self.kills += 1
        self.hazard.add(m)
        if sig == signal.SIGTERM:   # it answers, then ends
            if sc.msgs[m]["ident"]:
                s.reply(5)          # XFORWARD
            s.reply(5)              # MAIL
            rr = ["\n".join(s.reply(5)) for _ in rcpts]
            data = "\n".join(s.reply(5))
            acc = [r for r, x in zip(rcpts, rr) if x.startswith("2")]
            for r, x in zip(rcpts, rr):
                if not x.startswith("2"):
                    self.replies[(m, r)] = x
            final = s.replies(len(acc), timeout=15) \
                if data.startswith("354") else []
            for r, line in zip(acc, final):  # in RCPT order
                self.replies[(m, r)] = line
            s.wait(15)

    def daemon_fault(self, sc, m, rcpts, detail, daemon):
        """daemon_fault - family daemon: message M with a worker killed,
        the parent reloaded or stopped, or the client gone (DETAIL: kind,
        stage, delay after the dot); the session ends with it"""
        s = self.s
        kind, stage, delay = detail
        pid = rrtest.wait_until(daemon.serving, 2)
        if not pid:
            self.fails.append(("daemon", "not one worker in the session: "
                               "%r" % daemon.busy()))
            return
        daemon.note()
        msg = stuff(sc.message(m))
        s.send("".join(c + "\r\n" for c in
                       sc.head(m, rcpts, data=stage != "before_data")))
        if sc.msgs[m]["ident"]:
            s.reply()
        mail = "\n".join(s.reply())
        rr = ["\n".join(s.reply()) for _ in rcpts]
        for r, x in zip(rcpts, rr):
            if not x.startswith("2"):
                self.replies[(m, r)] = x
        acc = [r for r, x in zip(rcpts, rr) if x.startswith("2")]
        if stage != "before_data":
            data = "\n".join(s.reply())
            if not mail.startswith("250") or not data.startswith("354"):
                self.fails.append(("daemon", "MAIL %r, DATA %r" % (
                    mail[:60], data[:60])))
                return
            s.send(msg[:len(msg) // 2])
            time.sleep(0.02)
            if stage == "after_data":
                s.send(msg[len(msg) // 2:] + ".\r\n")
                time.sleep(delay)
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
            daemon.gone.add(pid)
        elif kind == "hup":
            daemon.gone.update(daemon.workers())
            daemon.signal(signal.SIGHUP)
        elif kind == "term":
            daemon.signal(signal.SIGTERM)
        else:
            s.sock.close()
        self.kills += kind != "vanish"
        if kind == "vanish":
            # its delivery, if any, ends and is journaled; it serves on
            if not rrtest.wait_until(lambda: pid not in daemon.busy(), 40):
                self.fails.append(("daemon", "worker still in the session "
                                   "40s after its client left"))
            elif not alive(pid):
                self.fails.append(("daemon", "worker gone with its client"))
            return
        if kind == "hup":
            self._hup_rest(sc, m, rcpts, acc, stage, msg, pid)
            return
        if stage == "after_data":
            self.hazard.add(m)
        lines = s.rest(30)
        if lines is None:
            self.fails.append(("daemon", "session open 30s after %s" % kind))
            lines = []
        if kind == "term":
            # in DATA the agent takes SIGTERM as its client gone (read_data):
            # no 421, nothing delivered; Postfix defers the message alike
            if lines and lines[-1].startswith("421 4.3.2"):
                lines = lines[:-1]
            elif lines or stage != "in_data":
                self.fails.append(("daemon", "after SIGTERM the session "
                                   "ended with %r" % lines[-1:]))
            if len(lines) not in (0, len(acc)) or \
                    (lines and stage != "after_data"):
                self.fails.append(("daemon", "%d replies for %d accepted "
                                   "after SIGTERM %s" % (len(lines), len(acc),
                                                         stage)))
            self.fails += [("daemon", x) for x in daemon.stopped("SIGTERM")]
        for r, line in zip(acc, lines):  # in RCPT order
            self.replies[(m, r)] = line

    def _hup_rest(self, sc, m, rcpts, acc, stage, msg, pid):
        """_hup_rest - after SIGHUP the message goes on to its end with
        every reply, then the worker says 421 4.3.2 and ends"""
        s = self.s
        if stage == "before_data":
            data = s.cmd("DATA")
            if not data.startswith("354"):
                self.fails.append(("daemon", "DATA after SIGHUP: %r"
                                   % data[:80]))
                return
            s.send(msg + ".\r\n")
        elif stage == "in_data":
            s.send(msg[len(msg) // 2:] + ".\r\n")
        final = s.replies(len(acc), timeout=s.timeout + 30)
        for r, line in zip(acc, final):  # in RCPT order
            self.replies[(m, r)] = line
            if "<%s>" % r.lower() not in line.lower():
                self.fails.append(("daemon", "%s after SIGHUP: %r"
                                   % (r, line[:80])))
        if len(final) != len(acc):
            self.fails.append(("daemon", "%d replies for %d accepted after "
                               "SIGHUP" % (len(final), len(acc))))
            return
        self.full.append((m, rcpts))
        bye = "\n".join(s.reply(5))
        if not bye.startswith("421 4.3.2") or s.wait(5) is None:
            self.fails.append(("daemon", "after SIGHUP and the message: "
                               "%r, no end" % bye[:80]))
        if not rrtest.wait_until(lambda: not alive(pid), 10):
            self.fails.append(("daemon", "old worker running 10s after "
                               "SIGHUP and its 421"))

    def end(self, quit=True):
        s = self.s
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        if self.killed_at is not None:
            for m, (t1, t2) in self.busy.items():
                if t1 <= self.killed_at and (t2 is None or
                                             t2 >= self.killed_at):
                    self.hazard.add(m)
        elif self.closed_421:
            # near its time limit the agent says 421 and ends by itself
            if s.wait(10) is None:
                self.replies[("error", -1)] = "agent still running 10s " \
                                              "after its 421"
        elif quit:
            try:
                s.cmd("QUIT")
            except OSError:
                pass
            s.wait(10)
        s.kill()


class Worker:
    def __init__(self, wid):
        self.agent = rrtest.Agent(
            name="ltorture-w%d" % wid, deadline="10s",
            timeouts=torture.TIMEOUTS, smtp_extra={"starttls_timeout": "1s"},
            extra_text=LMTP_CONF)
        self.daemon = None      # family daemon's, started per scenario

    def _session(self, sc, todo, fault):
        """_session - one LMTP session handing over TODO [(m, rcpts)],
        with FAULT in it (attempt 0) or none; returns its Sessions"""
        s = Session(self, DaemonClient(self.daemon.sock)
                    if sc.family == "daemon" else None)
        others = []
        if not s.open():
            s.end(quit=False)
            return [s]
        if fault is not None and fault[0] == "spawn":
            s.kill_at(fault[2])
        for m, rcpts in todo:
            if fault is not None and fault[1] == m:
                kind, _, detail = fault
                if kind == "vanish":
                    s.vanish(sc, m, rcpts, detail)
                    s.end(quit=False)
                    return [s]
                if kind == "kill":
                    s.signal(sc, m, rcpts, detail)
                    s.end(quit=False)
                    return [s]
                if kind == "daemon":
                    s.daemon_fault(sc, m, rcpts, detail, self.daemon)
                    s.end(quit=False)
                    return [s]
                if kind == "concurrent":
                    other, stays = self._concurrent(sc, s, m, rcpts, detail)
                    if not stays or not s.read_transaction(
                            sc, m, rcpts, s.busy[m][0]):
                        s.end(quit=False)
                        return [s] + other
                    others = other
                    continue
            if not s.transaction(sc, m, rcpts):
                s.end(quit=False)
                return [s] + others
        s.end()
        return [s] + others

    def _concurrent(self, sc, s, m, rcpts, detail):
        """_concurrent - message M to the first agent (its server
        connection stalls), then after a moment the same message to a
        second agent over a second connection, to its end: the retry of
        a Postfix whose first lmtp client gave up. The first session is
        left to read its replies, or (GONE) its client is gone. Returns
        ([the second Session], whether the first one goes on)."""
        pause, gone = detail
        s.busy[m] = (time.monotonic() - s.t0, None)
        if not s.send_head(sc, m, rcpts):
            return [], False
        if gone:
            time.sleep(0.05)
            s.s.sock.close()
        time.sleep(pause)
        b = Session(self)
        if b.open():
            b.transaction(sc, m, rcpts)
        b.end()
        if gone:
            if s.s.wait(40) is None:
                s.replies[("error", m)] = "first agent still running 40s " \
                                          "after its client left"
        return [b], not gone

    def _check(self, sc, res, sessions, final, taken_now, todo):
        for sess in sessions:
            for inv, text in sess.fails:
                res["fail"].append((inv, sc.family, text))
            for key, line in sess.replies.items():
                if key[0] == "error":
                    res["fail"].append(("answered", sc.family, line))
                    continue
                m, r = key
                if "<" in line and "<%s>" % r.lower() not in line.lower():
                    res["fail"].append(("answered", sc.family, "%s got "
                                        "another's reply: %s"
                                        % (r, line[:120])))
                if line.startswith("2"):
                    final[key] = "2"
                    if r.lower() not in taken_now:
                        res["fail"].append((
                            "consistent", sc.family, "%s: %s but the "
                            "server does not have it" % (r, line)))
                elif line.startswith("5"):
                    final[key] = "5"
            for m, rcpts in sess.full:
                if any((m, r) not in sess.replies for r in rcpts):
                    res["fail"].append(("answered", sc.family,
                                        "a recipient without a reply"))
            if sc.time_limit:
                self._check_margin(sc, res, sess)

    def _check_margin(self, sc, res, sess):
        """_check_margin - MAIL before the margin (the agent's age, from
        a later start than ours, is below ours) got 250; MAIL well past
        it did not"""
        for t, mail in sess.mails:
            if sess.killed_at is not None and t >= sess.killed_at - 0.05:
                continue
            if t < SPAWN_OPEN - 0.3 and not mail.startswith("250"):
                res["fail"].append(("margin", sc.family, "MAIL at %.2fs "
                                    "got %r" % (t, mail[:80])))
            if t > SPAWN_OPEN + 1.0 and mail.startswith("250"):
                res["fail"].append(("margin", sc.family, "MAIL at %.2fs "
                                    "past the margin got 250" % t))

    def scenario(self, seed):
        sc = Scenario(seed)
        sink = SmtpSink(sc.script)
        port = sink.start()
        extra = LMTP_CONF
        if sc.time_limit:
            extra += "\n[lmtp]\ntime_limit = %ds\n" % sc.time_limit
        self.agent.write_conf(relay="[127.0.0.1]:%d" % port,
                              extra_text=extra)
        if sc.family == "daemon":
            if self.daemon is None:
                self.daemon = Daemon(self.agent)
                rrtest.at_cleanup(self.daemon.stop)
            self.daemon.write_conf()
            self.daemon.seen, self.daemon.gone = set(), set()
        res = {"seed": seed, "family": sc.family, "fail": [], "window": 0,
               "runs": 0, "kills": 0,
               "n": sum(len(x["rcpts"]) for x in sc.msgs)}
        final = {}                      # (m, rcpt) -> "2" or "5"
        hazards = set()
        try:
            todo = [(m, list(x["rcpts"])) for m, x in enumerate(sc.msgs)]
            for attempt in range(RERUNS + 1):
                if sc.family == "daemon" and not self._daemon_up(res):
                    break
                sessions = self._session(
                    sc, todo, sc.fault if attempt == 0 else None)
                for sess in sessions:
                    hazards |= sess.hazard
                    res["kills"] += sess.kills
                res["runs"] += len(sessions)
                rrtest.wait_until(lambda: sink.active() == 0, timeout=10)
                taken_now = set()
                for msg in sink.messages():
                    for r in msg["rcpts"]:
                        taken_now.add(r.lower())
                self._check(sc, res, sessions, final, taken_now, todo)
                if sc.family == "concurrent" and attempt == 0:
                    hazards |= self._dot_lost(sc, sessions)
                if attempt == 0:
                    sink.set_script({})
                todo = [(m, [r for r in rc if (m, r) not in final])
                        for m, rc in todo]
                todo = [(m, rc) for m, rc in todo if rc]
                if not todo:
                    break
            counts = collections.Counter(r.lower() for msg in sink.messages()
                                         for r in msg["rcpts"])
            clean = all(msg.get("clean", True) for msg in sink.messages())
            for m, x in enumerate(sc.msgs):
                for r in x["rcpts"]:
                    k = (m, r)
                    c = counts[r.lower()]
                    if final.get(k) == "5" and c > 0:
                        res["fail"].append(("consistent", sc.family,
                                            "%s refused 5xx but taken" % r))
                    if c == 0 and final.get(k) != "5":
                        res["fail"].append(("lost", sc.family, "%s neither "
                                            "taken nor refused" % r))
                    if c > 1:
                        if m in hazards or not clean:
                            res["window"] += 1
                        else:
                            res["fail"].append(("duplicate", sc.family,
                                                "%s taken %d times" % (r, c)))
        finally:
            if sc.family == "daemon":
                res["fail"] += [("daemon", sc.family, x)
                                for x in self.daemon.finish()]
            sink.stop()
        return res

    def _daemon_up(self, res):
        """_daemon_up - family daemon: the daemon runs (started at the
        first attempt, and again after a SIGTERM, as systemd would)"""
        d = self.daemon
        if d.proc is not None and d.proc.poll() is None:
            d.note()
            return True
        if d.start():
            return True
        res["fail"].append(("daemon", "daemon", "did not start: %r" % (
            rrtest.read_file(d.err)[-300:])))
        d.note()
        if d.proc.poll() is None:
            d.signal(signal.SIGTERM)
        d.stopped("a failed start")
        return False

    @staticmethod
    def _dot_lost(sc, sessions):
        """_dot_lost - family concurrent: a first agent that timed out
        waiting for the dot's reply (a loaded machine can stretch the
        stall past data_done_timeout) left the window open itself"""
        m = sc.fault[1]
        lost = set()
        for sess in sessions:
            for (k, r), line in sess.replies.items():
                if k == m and line.startswith("4") and \
                        re.search(r"end of DATA", line) and \
                        re.search(r"tim", line, re.I):
                    lost.add(m)
        return lost


_worker = None


def _init():
    global _worker
    _worker = Worker(os.getpid() % 100000)


def _one(seed):
    try:
        return _worker.scenario(seed)
    except Exception:
        import traceback
        return {"seed": seed, "family": Scenario(seed).family, "n": 0,
                "runs": 0, "window": 0, "kills": 0,
                "fail": [("harness", "exception",
                          traceback.format_exc()[-600:])]}


def campaign(seed, n, jobs=1, progress=None):
    rrtest.ensure_user()
    rrtest.tmpdir()
    stats = {f: collections.Counter() for f in FAMILIES}
    failures = []
    t0 = time.monotonic()
    seeds = range(seed, seed + n)
    if jobs > 1:
        pool = multiprocessing.Pool(jobs, _init)
        it = pool.imap_unordered(_one, seeds)
    else:
        _init()
        it = map(_one, seeds)
    for k, r in enumerate(it, 1):
        c = stats[r["family"]]
        c["scenarios"] += 1
        c["recipients"] += r["n"]
        c["sessions"] += r["runs"]
        c["kills"] += r["kills"]
        c["window"] += r["window"]
        if r["fail"]:
            c["failed"] += 1
            failures.append(r)
            if progress:
                progress("FAIL seed %d (%s): %s" % (
                    r["seed"], r["family"], "; ".join(
                        "%s: %s" % (a, d) for a, b, d in r["fail"][:3])))
        if progress and k % 100 == 0:
            progress("%d/%d scenarios, %d failed, %.0fs"
                     % (k, n, len(failures), time.monotonic() - t0))
    if jobs > 1:
        pool.close()
        pool.join()
    return {"stats": stats, "failures": failures,
            "elapsed": time.monotonic() - t0}


def table(summary):
    cols = ("scenarios", "recipients", "sessions", "kills", "window",
            "failed")
    lines = ["%-10s " % "family" + " ".join("%10s" % c for c in cols)]
    tot = collections.Counter()
    for f in FAMILIES:
        c = summary["stats"][f]
        tot.update(c)
        lines.append("%-10s " % f + " ".join("%10d" % c[x] for x in cols))
    lines.append("%-10s " % "total" + " ".join("%10d" % tot[x]
                                               for x in cols))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("-j", type=int, default=1)
    a = ap.parse_args()
    s = campaign(a.seed, a.n, a.j, progress=lambda m: print(m, flush=True))
    print(table(s))
    print("elapsed %.0fs" % s["elapsed"])
    rrtest._done = True
    sys.exit(1 if s["failures"] else 0)


if __name__ == "__main__":
    main()
