#!/usr/bin/env python3
"""torture - a seeded fault-injection campaign against rapidretry-agent.

Each scenario (one integer seed) draws a batch (1-60 recipients over 1-8
domains), a hostile reply script for smtpsink, and sometimes a SIGKILL or
SIGTERM of the agent or a journal on a full or read-only filesystem. The
agent runs as pipe(8) runs it (argv, message on stdin, one status line,
exit code). After exit 75 or a kill the WHOLE argv runs again with the
same queue id, against the same server now well-behaved (and the disk
fault lifted), at most 5 times, as Postfix would retry it.

Invariants checked after every scenario (DESIGN §3, §7):
  accounting  every run that ended by itself logs each recipient exactly
              once (sent, bounced, deferred or skipped) and its exit code
              and status line follow the §7 table
  false-sent  nothing is logged sent that the server did not take in
              that run
  duplicate   nothing the server took is taken again, except in the one
              window no client can close (the final dot's reply lost, or
              a SIGKILL between the dot and the journal commit): counted
              apart as "window"
  false-bounce nothing the server took is bounced
  lost        every recipient ends taken or bounced after the reruns
  deadline    every run ends before its deadline + 5 s, no watchdog
  crash       exit status 0, 69 or 75 (or our own kill); no stderr; one
              stdout line; no sanitizer report
  connected-while-down  a run deferred "delivery temporarily suspended"
              made no connection (family "dead": a server that fails its
              first 1-4 connections, marked down after 2, DESIGN §11)
  redis       family "redis": the fleet state ([state] backend = redis,
              DESIGN §12) behind t/lib/resp_proxy.py with a random fault
              (stall, drop, garbage, a wrong type, a truncated bulk, OOM,
              NOSCRIPT, BUSY, LOADING, a refusing or silent listener) at
              a random command or reply, in the first run or in all; a
              third with a server fault too (without redis-server
              installed: no Redis fault). The invariants above, and
              with a well-behaved server the first run delivers (exit 0)
              within 5 x timeout_ms + 2 s: Redis defers nothing

Usage: torture.py [--seed S] [-n N] [-j J] [--json FILE] [--show]
                  [--family F]
Scenario K of a campaign has seed S+K; a failure prints its seed and the
command that replays it alone.
"""

import argparse
import collections
import glob
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                   # noqa: E402
from smtpsink import SmtpSink                   # noqa: E402
import resp_proxy                               # noqa: E402

FAMILIES = ("drop", "stall", "garbage", "mix", "kill", "disk", "mailrefused",
            "dead", "redis")
# destination scheduling (DESIGN §11) in every family: slots and leases;
# a server is marked down only in "dead", where the reruns wait out the
# down time as Postfix's retry would
SCHED = "\n[schedule]\nfailure_cohort = 0\n"
SCHED_DEAD = "\n[schedule]\nfailure_cohort = 2\ndown_time = 1s\n"
DEADLINE = 10           # the agent's shortest allowed deadline
SLACK = 5               # a run must end before deadline + SLACK
RERUNS = 5
TIMEOUTS = {k: "1s" for k in rrtest.TIMEOUT_KEYS}
TIMEOUTS["data_done_timeout"] = "2s"
REDIS_TIMEOUT_MS = 200
FLEET = ("\n[state]\nbackend = redis\nredis = %s\nlease_time = 3s\n"
         "timeout_ms = %d\n")
REDIS_KINDS = ("stall", "drop", "drop", "garbage", "wrongtype", "truncated",
               "error", "error", "refuse", "blackhole")

STEPS = ("CONNECT", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA",
         "BODY", "DOT")
AUTH_EHLO = ["PIPELINING", "AUTH PLAIN", "SIZE 1000000",
             "ENHANCEDSTATUSCODES"]
REPLIES = [
    ("250", "250 2.1.5 Ok"),
    ("452", "452 4.5.3 Error: too many recipients"),
    ("452bare", "452 Too many recipients"),
    ("451dom", "451 4.3.0 Multiple destination domains per transaction "
     "is unsupported"),
    ("grey", "450 4.2.0 Greylisted, try again later"),
    ("rate", "450 4.7.1 Error: too many recipients from [127.0.0.1]"),
    ("quota", "452 4.2.2 Mailbox full"),
    ("unknown", "550 5.1.1 User unknown"),
    ("552", "552 5.5.3 Too many recipients"),
    ("retry0", "451 4.4.5 try again retry=0"),
]


def garbage(rng):
    """garbage - one malformed reply (raw items for smtpsink)."""
    k = rng.randrange(11)
    if k == 0:
        return ["250-first line", "452 4.5.3 second line"]
    if k == 1:
        return ["250 " + "x" * rng.choice((600, 2000, 70000))]
    if k == 2:
        return [{"repeat": "250-" + "y" * 70,
                 "count": rng.choice((1000, 20000, 40000))}, "250 ok"]
    if k == 3:
        return ["250 ok\x00\xff\xfe bytes"]
    if k == 4:
        return ["2500 ok"]
    if k == 5:
        return ["45"]
    if k == 6:
        return ["999 what"]
    if k == 7:
        return ["250-no final line"]        # then silence: a stall
    if k == 8:
        return ["\xe9\xe8 8-bit garbage"]
    if k == 9:
        return ["250-a", "251-b", "250 c"]
    return ["250 ok\\"]                      # no line end at all


ABSURD_EHLO = [
    ["PIPELINING", "LIMITS RCPTMAX=0", "ENHANCEDSTATUSCODES"],
    ["PIPELINING", "LIMITS RCPTMAX=-5 MAILMAX=-1"],
    ["PIPELINING", "LIMITS RCPTMAX=99999999999999999999 MAILMAX=0"],
    ["PIPELINING", "SIZE 1", "8BITMIME"],
    ["PIPELINING", "SIZE -1", "LIMITS RCPTDOMAINMAX=0"],
    ["PIPELINING", "LIMITS RCPTMAX=1 MAILMAX=1"],
    ["PIPELINING", "LIMITS RCPTMAX=2 RCPTDOMAINMAX=1"],
    ["PIPELINING", "LIMITS RCPTMAX= MAILMAX", "SIZE"],
    ["PIPELINING", "LIMITS " + "X" * 3000],
    ["PIPELINING", "STARTTLS", "ENHANCEDSTATUSCODES"],
]


def step_rule(rng, nrcpt):
    """step_rule - a rule that matches one random step of the dialogue."""
    cmd = rng.choice(STEPS)
    r = {"cmd": cmd}
    if cmd == "RCPT":
        r["rcpt"] = rng.randint(1, max(1, min(nrcpt, 8)))
    if cmd == "BODY":
        r["after"] = rng.randrange(0, 6)
    if cmd != "CONNECT" and rng.random() < 0.5:
        r["ctxn"] = rng.randint(1, 3)
    if rng.random() < 0.6:
        r["conn"] = rng.randint(1, 2)
    r["times"] = rng.choice((1, 1, 1, 2))
    return r


class Scenario:
    """Scenario - everything one seed decides."""

    def __init__(self, seed):
        self.seed = seed
        rng = random.Random(seed)
        # the family by the seed: each has its 1/7 of any run of seeds, so
        # cheap faults cannot crowd out kills and disk faults
        self.family = FAMILIES[seed % len(FAMILIES)]
        ndom = rng.randint(1, 8)
        n = rng.randint(1, 60)
        doms = ["d%d.test" % i for i in range(1, ndom + 1)]
        rc = ["r%d@%s" % (i, rng.choice(doms)) for i in range(1, n + 1)]
        self.rcpts = sorted(rc, key=lambda a: a.split("@")[1])
        self.sender = "" if rng.random() < 0.1 else "s@src.test"
        self.qid = "%X" % (0x10000000 + seed % 0xEFFFFFFF)
        self.body_lines = rng.choice((3, 5, 40, 2000))
        self.script = {"rules": []}
        self.kill = None            # (signal, seconds)
        self.disk = None            # ("full", free KiB, warm) / ("ro", warm)
        self.redis = None           # resp_proxy rules, "refuse", "blackhole"
        self.redis_persist = False  # the Redis fault in every run
        self.redis_clean = True     # no server fault besides
        rules = self.script["rules"]
        f = self.family
        if f == "drop":
            r = step_rule(rng, n)
            if r["cmd"] == "DOT" and rng.random() < 0.5:
                r.update(reply="250 2.0.0 Ok", close=True)  # after the reply
            else:
                r["action"] = "drop"
                if r["cmd"] == "DOT" and rng.random() < 0.5:
                    r["taken"] = True   # queued, reply lost
            rules.append(r)
        elif f == "stall":
            r = step_rule(rng, n)
            r["action"] = "silent"
            if r["cmd"] == "DOT" and rng.random() < 0.5:
                r["taken"] = True
            rules.append(r)
        elif f == "garbage":
            if rng.random() < 0.3:
                self.script["ehlo"] = rng.choice(ABSURD_EHLO)
            else:
                r = step_rule(rng, n)
                r["raw"] = garbage(rng)
                rules.append(r)
        elif f == "mix":
            self._mix(rng, n)
        elif f == "kill":
            sig = rng.choice((signal.SIGKILL, signal.SIGTERM))
            self.kill = (sig, rng.uniform(0.005, 0.5))
            if rng.random() < 0.7:      # make the kill land near the dot
                rules.append({"cmd": "DOT", "delay": rng.uniform(0.05, 0.4),
                              "times": rng.randint(1, 3)})
            if rng.random() < 0.3:
                rules.append({"cmd": "RCPT", "delay": 0.02})
            if rng.random() < 0.5:
                self._mix(rng, n)
        elif f == "disk":
            warm = rng.random() < 0.5
            if rng.random() < 0.6:
                self.disk = ("full", rng.choice((4, 8, 12, 16, 24, 32, 48)),
                             warm)
            else:
                self.disk = ("ro", 0, warm)
            if rng.random() < 0.5:
                self._mix(rng, n)
        elif f == "dead":
            # the server fails the first K connections (no greeting, a
            # tarpit, 421), then works: marked down after 2, probed
            how = rng.choice(("drop", "silent", "421"))
            r = {"cmd": "CONNECT", "times": rng.randint(1, 4)}
            if how == "421":
                r.update(reply="421 4.3.2 Service not available", close=True)
            else:
                r["action"] = how
            rules.append(r)             # alone: the script stays as it is
        elif f == "redis":
            self._redis(rng, n)
        elif f == "mailrefused":
            rep = rng.choice(("452 4.5.3 Error: too many recipients",
                              "451 4.3.0 try later", "550 5.7.1 go away",
                              "421 4.3.2 closing"))
            r = {"cmd": "MAIL", "reply": rep,
                 "times": rng.choice((1, 1, 2, 3))}
            if rep.startswith("421"):
                r["close"] = True
            elif rng.random() < 0.6:
                r["action"] = "take"    # against RFC 2920
            if rng.random() < 0.5:
                r["ctxn"] = rng.randint(1, 2)
            rules.append(r)
        self.auth = any(r.get("cmd") == "AUTH" for r in rules)
        if self.auth:               # the agent logs in: password file
            self.script["ehlo"] = AUTH_EHLO
        if any(r.get("cmd") == "STARTTLS" for r in rules):
            self.script["ehlo"] = ["PIPELINING", "STARTTLS", "SIZE 1000000",
                                   "ENHANCEDSTATUSCODES"]
        # a second, independent fault now and then
        if f not in ("mix", "dead", "redis") and rng.random() < 0.25:
            r = step_rule(rng, n)
            r["reply"] = rng.choice(REPLIES)[1]
            if r["cmd"] in ("CONNECT", "BODY", "DOT", "STARTTLS"):
                r = {"cmd": "RCPT", "rcpt": rng.randint(1, 4),
                     "reply": r["reply"], "times": 2}
            rules.append(r)

    def _redis(self, rng, n):
        """_redis - a fault of the fleet's Redis (resp_proxy rules, or
        "refuse" / "blackhole") at a point the session reaches: the
        server one session long, slow (the lease renewed meanwhile),
        limited (a limit learned, written to Redis), two sessions long (a
        421: the first one's owed replies read with the second acquire),
        or with a server fault as well"""
        mode = rng.choice(("one", "slow", "limit", "two", "fault", "fault"))
        points = [None, "load:acquire", "load:limits", "acquire", "acquire",
                  "opened", "release"]
        if mode == "slow":
            # once: a dot slow in every transaction of a long batch
            # would spend the deadline, not Redis
            self.script["rules"].append({"cmd": "DOT", "delay": 1.2,
                                         "times": 1})
            points += ["renew"] * 3
        elif mode == "limit":
            self.script["rcpt_max"] = rng.randint(1, 4)
            points += ["limits"] * 3
        elif mode == "two":
            self.script["rules"].append(
                {"cmd": "RCPT", "conn": 1, "rcpt": rng.randint(2, 3),
                 "reply": "421 4.7.0 sink.test closing", "close": True})
        elif mode == "fault":
            r = step_rule(rng, n)
            if rng.random() < 0.5:
                r["raw"] = garbage(rng)
            else:
                r["action"] = rng.choice(("drop", "silent"))
            self.script["rules"].append(r)
            self.redis_clean = False
        kind = rng.choice(REDIS_KINDS)
        self.redis_persist = rng.random() < 0.3
        if kind in ("refuse", "blackhole"):
            self.redis = kind
            return
        point = rng.choice(points)
        r = {"kind": kind, "match": point, "on": rng.choice(("cmd", "reply")),
             "n": rng.randint(1, 10) if point is None else
             rng.randint(1, 2) if mode == "two" else 1,
             "times": rng.choice((1, 1, 2, 5))}
        if kind == "stall":
            r["ms"] = rng.choice((100, 300, 1500))
        elif kind == "error":
            r["error"] = rng.choice(sorted(resp_proxy.ERRORS))
        elif kind == "drop" and r["on"] == "reply":
            r["cut"] = rng.randint(0, 12)
        elif kind == "wrongtype" and rng.random() < 0.5:
            r["bytes"] = rng.choice((b"*2\r\n:1\r\n:2\r\n", b"$-1\r\n",
                                     b"*-1\r\n", b"+OK\r\n"))
        elif kind == "truncated":
            r["silent"] = rng.random() < 0.5
        self.redis = [r]

    def _mix(self, rng, n):
        rules = self.script["rules"]
        k = rng.random()
        if k < 0.15:
            self.script["rcpt_max"] = rng.randint(1, 10)
        elif k < 0.25:
            self.script["one_domain"] = True
        for txn in range(1, rng.randint(2, 4)):
            for i in range(1, min(n, 12) + 1):
                if rng.random() < 0.5:
                    continue
                name, rep = rng.choice(REPLIES)
                rules.append({"cmd": "RCPT", "txn": txn, "rcpt": i,
                              "reply": rep})
        if rng.random() < 0.3:      # 421 in the middle of pipelined RCPTs
            rules.append({"cmd": "RCPT", "conn": 1,
                          "rcpt": rng.randint(1, max(1, min(n, 10))),
                          "reply": "421 4.7.0 sink.test closing",
                          "close": True})

    def message(self):
        body = "".join(
            (".dot line %d\n" % i) if i % 7 == 3 else
            (".\n" if i % 11 == 5 else "line %d of the body\n" % i)
            for i in range(self.body_lines))
        return ("From: <s@src.test>\nTo: undisclosed-recipients:;\n"
                "Subject: torture %d\nMessage-ID: <%d@src.test>\n\n%s"
                % (self.seed, self.seed, body))


class Worker:
    """Worker - one agent directory, one journal, scenarios in turn."""

    def __init__(self, wid):
        self.wid = wid
        self.agent = rrtest.Agent(name="torture-w%d" % wid,
                                  deadline="%ds" % DEADLINE,
                                  timeouts=TIMEOUTS,
                                  smtp_extra={"starttls_timeout": "1s"},
                                  extra_text=SCHED)
        self.asan_dir = os.path.join(rrtest.tmpdir(), "asan")
        self.redis = self.proxy = None

    # --- the fleet's Redis, behind the fault proxy -------------------------

    def _redis_conf(self, conf):
        """_redis_conf - CONF with the fleet state behind the proxy; Redis
        emptied and the host's state new (its mark that Redis failed is
        the previous scenario's)"""
        if self.redis is None:
            d = rrtest.subdir("redis-w%d" % self.wid, owner=rrtest.TEST_USER)
            self.redis = resp_proxy.RedisServer(d)
            self.redis.start()
            self.proxy = resp_proxy.RespProxy(
                self.redis.sock, os.path.join(d, "proxy.sock"))
            self.proxy.start()
        self.redis.command("FLUSHALL")
        for f in glob.glob(os.path.join(self.agent.journal_dir,
                                        "destinations.state*")):
            os.unlink(f)
        out = os.path.join(self.agent.dir, "redis.conf")
        rrtest.write_file(out, rrtest.read_file(conf) + FLEET % (
            self.proxy.addr, REDIS_TIMEOUT_MS), owner=rrtest.TEST_USER)
        return out

    def _redis_fault(self, sc, on):
        p = self.proxy
        p.set_script(sc.redis if on and isinstance(sc.redis, list) else [])
        if on and sc.redis == "refuse":
            p.refuse()
        else:
            p.accept()
        p.blackhole(on and sc.redis == "blackhole")
        if not on:
            p.hangup()

    # --- disk faults -----------------------------------------------------

    def _mount(self, sc):
        d = os.path.join(self.agent.dir, "tmpfs")
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755",
                        "tmpfs", d], check=True)
        pw = rrtest.ensure_user()
        os.chown(d, pw.pw_uid, pw.pw_gid)
        return d

    def _umount(self, d):
        subprocess.run(["umount", "-l", d], stderr=subprocess.DEVNULL)

    # --- one run -----------------------------------------------------------

    def _run(self, sc, conf, port, sig_after):
        a = self.agent
        argv = [a.binary, "-c", conf, "-i", sc.qid, "-n",
                "[127.0.0.1]:%d" % port, "-f", sc.sender, "--"] + sc.rcpts
        pw = rrtest.ensure_user()
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=a.env(), cwd=a.dir, user=pw.pw_uid,
                             group=pw.pw_gid, extra_groups=[])
        killed = None
        try:
            if sig_after is not None:
                try:
                    p.stdin.write(sc.message().encode())
                    p.stdin.close()
                except BrokenPipeError:
                    pass
                p.stdin = None
                try:
                    p.wait(sig_after[1])
                except subprocess.TimeoutExpired:
                    p.send_signal(sig_after[0])
                    killed = sig_after[0]
                out, err = p.communicate(timeout=DEADLINE + 40)
            else:
                out, err = p.communicate(sc.message().encode(),
                                         timeout=DEADLINE + 40)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            killed = "hung"
        return dict(pid=p.pid, rc=p.returncode, out=out.decode(
            errors="replace"), err=err.decode(errors="replace"),
            elapsed=time.monotonic() - t0, killed=killed)

    def scenario(self, seed):
        sc = Scenario(seed)
        sink = SmtpSink(sc.script)
        port = sink.start()
        a = self.agent
        conf = a.conf
        mnt = None
        res = {"seed": seed, "family": sc.family, "n": len(sc.rcpts),
               "fail": [], "window": 0, "runs": []}
        try:
            if sc.auth:
                pwf = os.path.join(a.dir, "sasl_passwd")
                rrtest.write_file(pwf, "[127.0.0.1]:%d u:p\n" % port,
                                  mode=0o600, owner=rrtest.TEST_USER)
                conf = os.path.join(a.dir, "auth.conf")
                rrtest.write_file(conf, rrtest.read_file(a.conf) +
                                  "\n[sasl]\npassword_file = %s\n"
                                  "allow_plaintext_auth = yes\n" % pwf,
                                  owner=rrtest.TEST_USER)
            if sc.family == "dead":
                conf = os.path.join(a.dir, "dead.conf")
                rrtest.write_file(conf, rrtest.read_file(a.conf).replace(
                    SCHED, SCHED_DEAD), owner=rrtest.TEST_USER)
            if sc.redis is not None and shutil.which("redis-server"):
                conf = self._redis_conf(conf)
            else:
                sc.redis = None
            if sc.disk:
                mnt = self._mount(sc)
                text = rrtest.read_file(conf).replace(
                    "journal = %s" % a.journal,
                    "journal = %s/journal.db" % mnt)
                conf = os.path.join(a.dir, "disk.conf")
                rrtest.write_file(conf, text, owner=rrtest.TEST_USER)
                if sc.disk[2]:          # a journal exists already
                    good = SmtpSink({})
                    gp = good.start()
                    warm = Scenario(seed)
                    warm.rcpts, warm.qid = ["warm@d1.test"], "W" + sc.qid
                    self._run(warm, conf, gp, None)
                    good.stop()
                self.mnt = mnt
                if sc.disk[0] == "full":
                    fill = os.path.join(mnt, "filler")
                    st = os.statvfs(mnt)
                    free = st.f_bavail * st.f_frsize - sc.disk[1] * 1024
                    if free > 0:
                        with open(fill, "wb") as f:
                            f.write(b"\0" * free)
                else:
                    subprocess.run(["mount", "-o", "remount,ro", mnt],
                                   check=True)
            self._campaign(sc, sink, conf, port, res)
        finally:
            sink.stop()
            if mnt:
                self._umount(mnt)
        return res

    def _campaign(self, sc, sink, conf, port, res):
        a = self.agent
        taken_before = 0
        runs = res["runs"]
        for i in range(RERUNS + 1):
            before = len(a.log_lines())
            if sc.family == "dead" and i > 0:
                time.sleep(1.1)                 # the down time is over
            conns = sink.connections()
            if sc.redis is not None:
                self._redis_fault(sc, i == 0 or sc.redis_persist)
            r = self._run(sc, conf, port, sc.kill if i == 0 else None)
            if sc.redis is not None:
                r["redis"] = len(self.proxy.fired()) + (
                    0 if isinstance(sc.redis, list) else 1)
            rrtest.wait_until(lambda: sink.active() == 0, timeout=10)
            r["conns"] = sink.connections() - conns
            lines = a.log_lines()[before:]
            msgs = sink.messages()
            r["takes"] = msgs[taken_before:]
            taken_before = len(msgs)
            r["log"] = [l for l in lines
                        if "rapidretry/agent[%d]" % r["pid"] in l]
            runs.append(r)
            if i == 0 and sc.family != "dead":  # well-behaved from now on
                sink.set_script({"ehlo": AUTH_EHLO} if sc.auth else {})
                if sc.disk:                     # the fault is lifted
                    mnt = self.mnt
                    if sc.disk[0] == "full":
                        try:
                            os.unlink(os.path.join(mnt, "filler"))
                        except FileNotFoundError:
                            pass
                    subprocess.run(["mount", "-o", "remount,rw,size=16m",
                                    mnt], check=True)
            if r["rc"] in (0, 69):            # pipe(8): done
                break
        if sc.redis is not None:
            self._redis_fault(sc, False)
        check(sc, res, self.asan_dir)


STATUS_RX = re.compile(r": to=<([^>]*)>,.*dsn=(\S+), status=(\w+)")
DELAY_RX = re.compile(r", delay=([\d.]+), .*status=sent")
SKIP_RX = re.compile(r": to=<([^>]*)>, skipped: (\w+)")


def run_outcomes(lines):
    """run_outcomes - {rcpt: [status, ...]} from one run's log lines."""
    out = collections.defaultdict(list)
    for l in lines:
        m = STATUS_RX.search(l)
        if m:
            out[m.group(1).lower()].append(m.group(3))
            continue
        m = SKIP_RX.search(l)
        if m:
            out[m.group(1).lower()].append("skipped-" + m.group(2))
    return out


def check(sc, res, asan_dir):
    """check - the invariants; failures go to res["fail"] as (kind,
    cause, detail)."""
    fail = res["fail"]
    rcpts = [r.lower() for r in sc.rcpts]
    first_take = {}             # rcpt -> (run index, message)
    bounced = set()
    for i, r in enumerate(res["runs"]):
        # a run we killed is exempt from the exit checks unless it ended
        # by itself (SIGTERM handled: then it must account as usual)
        mine = r["killed"] is not None and (r["rc"] is None or r["rc"] < 0)
        if r["killed"] == "hung":
            fail.append(("deadline", "hung", "run %d never ended" % i))
        if r["elapsed"] > DEADLINE + SLACK and r["killed"] is None:
            fail.append(("deadline", "slow", "run %d took %.1fs"
                         % (i, r["elapsed"])))
        if "watchdog" in r["out"]:
            fail.append(("deadline", "watchdog", r["out"].strip()))
        if r["err"]:
            fail.append(("crash", "stderr", r["err"][:300]))
        if not mine and r["rc"] not in (0, 69, 75):
            fail.append(("crash", "exit", "run %d exit %r %r"
                         % (i, r["rc"], r["out"][:200])))
        if not mine and r["out"].count("\n") != 1:
            fail.append(("crash", "stdout", "run %d stdout %r"
                         % (i, r["out"][:300])))
        if r["killed"] == signal.SIGTERM and r["rc"] == -signal.SIGTERM:
            res.setdefault("notes", []).append("sigterm-died")
        taken = set()
        for m in r["takes"]:
            for x in m["rcpts"]:
                x = x.lower()
                taken.add(x)
                if x in first_take:
                    j, m0 = first_take[x]
                    cause = dup_cause(sc, res["runs"][j], m0)
                    if cause == "window":
                        res["window"] += 1
                    else:
                        fail.append(("duplicate", cause,
                                     "%s taken in run %d and run %d"
                                     % (x, j, i)))
                else:
                    first_take[x] = (i, m)
        outc = run_outcomes(r["log"])
        for x, st in outc.items():
            if "sent" in st and x not in taken:
                fail.append(("false-sent", cause_of(sc, r),
                             "%s logged sent in run %d, not taken" % (x, i)))
            if "skipped-delivered" in st and x not in first_take:
                fail.append(("false-sent", cause_of(sc, r),
                             "%s skipped as delivered in run %d, never "
                             "taken" % (x, i)))
            if "skipped-bounced" in st and x not in bounced:
                fail.append(("accounting", cause_of(sc, r),
                             "%s skipped as bounced in run %d, never "
                             "bounced" % (x, i)))
            if "bounced" in st:
                bounced.add(x)
                if x in first_take:
                    fail.append(("false-bounce", cause_of(sc, r),
                                 "%s bounced in run %d but taken" % (x, i)))
        if not mine:
            accounting(sc, r, outc, rcpts, i, fail)
        if "delivery temporarily suspended" in r["out"] and r["conns"] and \
                not any("sent" in st for st in outc.values()):
            fail.append(("connected-while-down", cause_of(sc, r),
                         "run %d: suspended, yet %d connection(s)"
                         % (i, r["conns"])))
    if sc.redis is not None and sc.redis_clean and res["runs"]:
        r = res["runs"][0]
        if r["rc"] != 0 and r["killed"] is None:
            fail.append(("redis", "deferred", "run 0 with a well-behaved "
                         "server: exit %r %r" % (r["rc"], r["out"][:200])))
        # the first transaction's delay: Redis may cost it timeout_ms,
        # not every transaction of a long batch each
        lim = 5 * REDIS_TIMEOUT_MS / 1000.0 + 2 + (
            1.2 if any(x.get("delay") for x in sc.script["rules"]) else 0)
        delays = [float(m.group(1)) for m in
                  (DELAY_RX.search(l) for l in r["log"]) if m]
        if delays and min(delays) > lim:
            fail.append(("redis", "slow", "run 0: the first delivery "
                         "after %.1fs (%s)" % (min(delays), sc.redis)))
    for x in rcpts:
        if x not in first_take and x not in bounced:
            fail.append(("lost", cause_of(sc, res["runs"][0]),
                         "%s neither taken nor bounced after %d runs"
                         % (x, len(res["runs"]))))
    reports = glob.glob(os.path.join(asan_dir, "asan*"))
    if reports:
        fail.append(("crash", "sanitizer", open(reports[0],
                                                errors="replace").read()[:800]))
        for p in reports:
            os.unlink(p)


def accounting(sc, r, outc, rcpts, i, fail):
    """accounting - DESIGN §7: each recipient once, exit code by table."""
    counts = collections.Counter(rcpts)
    early = (r["rc"] == 75 and not outc)     # whole batch deferred at start
    if not early:
        for x in counts:
            got = outc.get(x, [])
            if len(got) != counts[x]:
                fail.append(("accounting", cause_of(sc, r),
                             "run %d: %s logged %r" % (i, x, got)))
                return
    st = {s for v in outc.values() for s in v}
    if early or "deferred" in st:
        want = (75, "4.")
    elif st and st <= {"bounced"}:
        want = (69, "5.")
    else:
        want = (0, "2.")
    if r["rc"] != want[0] or not r["out"].startswith(want[1]):
        fail.append(("accounting", cause_of(sc, r),
                     "run %d: exit %r %r, want %d %s (outcomes %s)"
                     % (i, r["rc"], r["out"].strip()[:120], want[0],
                        want[1], sorted(st))))


def cause_of(sc, r):
    """cause_of - what a failure in run R is most likely about: the
    known hazard it matches, else the scenario's family."""
    if any(x.get("cmd") == "BODY" and not x.get("action")
           for x in sc.script.get("rules", [])):
        return "premature-reply"                # a reply before the dot
    if sc.disk and r is not None:
        return "journal-disk"                   # disk full under the journal
    if sc.family == "mailrefused":
        return "mail-refused"                   # MAIL FROM refused
    if any("MAILMAX" in e for e in sc.script.get("ehlo", [])):
        return "limits-mailmax"                 # a MAILMAX-style limit
    if sc.kill and sc.kill[0] == signal.SIGTERM:
        return "sigterm"                        # SIGTERM from pipe(8)
    return sc.family


def dup_cause(sc, run, msg):
    """dup_cause - "window" when no client could have known: the take's
    reply was lost or garbled, or a SIGKILL may have hit between the dot
    and the journal commit."""
    if not msg.get("clean", True):
        return "window"
    if run["killed"] == signal.SIGKILL:
        return "window"
    if run["killed"] == "hung":
        return "window"
    if run["killed"] == signal.SIGTERM:
        return "sigterm"                        # SIGTERM from pipe(8)
    return cause_of(sc, run)


def replay_cmd(seed):
    return "make torture SEED=%d N=1" % seed


_worker = None


def _init(base):
    global _worker
    _worker = Worker(base + os.getpid() % 1000)


def _one(seed):
    try:
        r = _worker.scenario(seed)
    except Exception as e:                    # the harness must go on
        import traceback
        r = {"seed": seed, "family": Scenario(seed).family, "fail": [
            ("harness", "exception", traceback.format_exc()[-800:])],
            "window": 0, "runs": []}
    r["redis_faults"] = sum(run.get("redis", 0) for run in r["runs"])
    for run in r["runs"]:                     # keep results small
        run.pop("log", None)
        run["takes"] = len(run["takes"])
    return r


def campaign(seed, n, jobs=1, progress=None, family=None):
    """campaign - run scenarios SEED .. SEED+N-1 (or the first N seeds
    from SEED on of FAMILY); returns the summary."""
    rrtest.ensure_user()
    rrtest.tmpdir()
    seeds = list(range(seed, seed + n))
    if family is not None:
        k = FAMILIES.index(family)
        first = seed + (k - seed) % len(FAMILIES)
        seeds = list(range(first, first + n * len(FAMILIES), len(FAMILIES)))
    stats = {f: collections.Counter() for f in FAMILIES}
    failures = []
    t0 = time.monotonic()
    if jobs > 1:
        pool = multiprocessing.Pool(jobs, _init, (0,))
        it = pool.imap_unordered(_one, seeds)
    else:
        _init(0)
        it = map(_one, seeds)
    for k, r in enumerate(it, 1):
        c = stats[r["family"]]
        c["scenarios"] += 1
        c["recipients"] += r.get("n", 0)
        c["runs"] += len(r["runs"])
        c["window"] += r["window"]
        c["kills"] += 1 if r["runs"] and r["runs"][0]["killed"] else 0
        c["redis_faults"] += r.get("redis_faults", 0)
        for kind, cause, detail in r["fail"]:
            c["fail:" + kind] += 1
        if r["fail"]:
            c["failed"] += 1
            failures.append(r)
            if progress:
                progress("FAIL seed %d (%s): %s; replay: %s" % (
                    r["seed"], r["family"], "; ".join(
                        "%s/%s: %s" % (k2, c2, d2.splitlines()[0][:160]
                                       if d2 else "")
                        for k2, c2, d2 in r["fail"][:4]),
                    replay_cmd(r["seed"])))
        if progress and k % 100 == 0:
            progress("%d/%d scenarios, %d failed, %.0fs" % (
                k, n, len(failures), time.monotonic() - t0))
    if jobs > 1:
        pool.close()
        pool.join()
    return {"seed": seed, "n": n, "elapsed": time.monotonic() - t0,
            "stats": {f: dict(c) for f, c in stats.items()},
            "failures": [{"seed": r["seed"], "family": r["family"],
                          "fail": r["fail"]} for r in failures]}


def by_cause(summary):
    """by_cause - Counter of (kind, cause) over the failures."""
    c = collections.Counter()
    for f in summary["failures"]:
        for kind, cause, _ in f["fail"]:
            c[(kind, cause)] += 1
    return c


def table(summary):
    """table - the counts by fault family as text."""
    rows = ["%-12s %9s %10s %5s %6s %6s %6s" % (
        "family", "scenarios", "recipients", "runs", "kills", "window",
        "failed")]
    tot = collections.Counter()
    for f in FAMILIES:
        c = summary["stats"].get(f, {})
        rows.append("%-12s %9d %10d %5d %6d %6d %6d" % (
            f, c.get("scenarios", 0), c.get("recipients", 0),
            c.get("runs", 0), c.get("kills", 0), c.get("window", 0),
            c.get("failed", 0)))
        tot.update(c)
    rows.append("%-12s %9d %10d %5d %6d %6d %6d" % (
        "total", tot["scenarios"], tot["recipients"], tot["runs"],
        tot["kills"], tot["window"], tot["failed"]))
    if tot["redis_faults"]:
        rows.append("redis faults injected: %d" % tot["redis_faults"])
    for (kind, cause), k in sorted(by_cause(summary).items()):
        rows.append("failures %s/%s: %d" % (kind, cause, k))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("-j", type=int, default=1)
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--family", choices=FAMILIES,
                    help="only N scenarios of this family")
    ap.add_argument("--show", action="store_true",
                    help="print each scenario's script (replays)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("torture: needs root (test user, tmpfs mounts)")
    rrtest.build_dir()
    if a.show:
        for s in range(a.seed, a.seed + a.n):
            sc = Scenario(s)
            print(json.dumps({"seed": s, "family": sc.family,
                              "rcpts": len(sc.rcpts), "kill": sc.kill,
                              "disk": sc.disk, "script": sc.script})[:4000])
    summary = campaign(a.seed, a.n, a.j,
                       progress=lambda m: print(m, flush=True),
                       family=a.family)
    print(table(summary), flush=True)
    print("elapsed %.0fs" % summary["elapsed"], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    rrtest._done = True
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    main()
