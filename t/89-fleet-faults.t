#!/usr/bin/env python3
# 89-fleet-faults.t - the fleet state fails open and bounded (DESIGN §12,
# issue 24): the agent in pipe mode with [state] backend = redis behind
# t/lib/resp_proxy.py, a fault proxy in front of a redis-server of the
# test's own, each fault kind (stall, drop before a command and in the
# middle of a reply, garbage, a wrong type, a truncated bulk, OOM,
# NOSCRIPT, BUSY, LOADING, a refusing and a silent listener, a connect
# that hangs (on 127.0.0.1), a real OOM from maxmemory) at the points of
# a session: the connection's first
# look (the scripts loaded), the slot acquired, the session noted as
# open, a limit learned, the slot given back, the lease renewed, and the
# replies owed from one session read with the next one's acquire. For
# every case, against the same server without the fault:
#   - the same status line (delivered, as many transactions), exit 0;
#   - the server took every recipient exactly once, each logged sent;
#   - no deferral; the run's time within 5 x timeout_ms + 2 s of the
#     run without the fault;
#   - the fault was injected; when the agent waited for the faulty
#     reply, the log says once that the host's own state is used;
# and the next run, Redis well again, delivers too. In LMTP mode (one
# resident agent, four messages in one LMTP session): a later message's
# acquire stalled, dropped or refused NOSCRIPT, an owed reply bad, every
# reply stalled from the 8th on, Redis refusing or silent from the second
# message on: every recipient answered 250 once and taken once, no
# message slower than the bound, the fallback logged once.
import os
import re
import shutil
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
from resp_proxy import RedisServer, RespProxy
from smtpsink import SmtpSink

rrtest.require_root()
if not shutil.which("redis-server"):
    rrtest.skip_all("redis-server is not installed")

TIMEOUT_MS = 200
BOUND = 5 * TIMEOUT_MS / 1000.0 + 2
rdir = rrtest.subdir("redis", owner=rrtest.TEST_USER)
redis = RedisServer(rdir)
redis.start()
proxy = RespProxy(redis.sock, os.path.join(rdir, "proxy.sock"))
FLEET = ("\n[schedule]\nfailure_cohort = 0\n[state]\nbackend = redis\n"
         "redis = %s\nlease_time = 3s\ntimeout_ms = %d\n"
         % (proxy.start(), TIMEOUT_MS))
RCPTS = ["a@d1.test", "b@d1.test", "c@d2.test", "d@d2.test"]

# the server, by what the session does: one session; a limit learned
# (rcpt_max 2: two transactions); two sessions (421 in the first, so the
# second's acquire reads the replies the first one's left owed); a slow
# dot (the lease renewed while it waits)
SERVERS = {
    "one": {},
    "limit": {"rcpt_max": 2},
    "two": {"rules": [{"cmd": "RCPT", "conn": 1, "rcpt": 2,
                       "reply": "421 4.7.0 sink.test closing",
                       "close": True}]},
    "slow": {"rules": [{"cmd": "DOT", "delay": 1.6}]},
}


def cmd(n, kind, match=None, **kw):
    return dict(kw, on="cmd", n=n, kind=kind, match=match)


def reply(n, kind, match=None, **kw):
    return dict(kw, on="reply", n=n, kind=kind, match=match)


STALL = 5 * TIMEOUT_MS + 500    # longer than the agent waits


def fired_now(proxy, rules):
    """fired_now - the faults injected; a command the agent sends without
    waiting (release) may reach the proxy after the agent's exit, so
    for a scripted fault give it up to 3 s to arrive"""
    end = time.monotonic() + 3
    fired = proxy.fired()
    while isinstance(rules, list) and not fired and time.monotonic() < end:
        time.sleep(0.02)
        fired = proxy.fired()
    return fired
# (name, server, rules or a special, the agent waited for it: True,
# False, None = either)
CASES = [
    # the first look: the scripts loaded in the connection's first pipeline
    ("stall at the first reply", "one", [reply(1, "stall", ms=STALL)], True),
    ("drop before the first command", "one", [cmd(1, "drop")], True),
    ("drop in the middle of a SCRIPT LOAD reply", "one",
     [{"on": "byte", "n": 20, "kind": "drop"}], True),
    ("garbage for a SCRIPT LOAD", "one", [reply(2, "garbage")], True),
    ("OOM for a SCRIPT LOAD", "one", [cmd(3, "error", error="oom")], True),
    ("LOADING for the first command", "one",
     [cmd(1, "error", error="loading")], True),
    ("listener refusing", "one", "refuse", True),
    ("listener silent", "one", "blackhole", True),
    # the slot acquired
    ("stall at acquire", "one", [reply(1, "stall", "acquire", ms=STALL)],
     True),
    ("drop before acquire", "one", [cmd(1, "drop", "acquire")], True),
    ("drop in the middle of acquire's reply", "one",
     [reply(1, "drop", "acquire", cut=7)], True),
    ("garbage for acquire", "one",
     [reply(1, "garbage", "acquire", bytes=b"\x00\xffnot RESP\r\n")], True),
    ("wrong type for acquire (:1)", "one", [reply(1, "wrongtype",
                                                  "acquire")], True),
    ("wrong shape for acquire (an array of integers)", "one",
     [reply(1, "wrongtype", "acquire", bytes=b"*2\r\n:1\r\n:2\r\n")], True),
    ("truncated bulk for acquire", "one", [reply(1, "truncated",
                                                 "acquire")], True),
    ("truncated bulk for acquire, then silence", "one",
     [reply(1, "truncated", "acquire", silent=True)], True),
    ("OOM for acquire", "one", [cmd(1, "error", "acquire", error="oom")],
     True),
    ("NOSCRIPT for acquire", "one", [cmd(1, "error", "acquire",
                                         error="noscript")], True),
    ("BUSY for acquire", "one", [cmd(1, "error", "acquire", error="busy")],
     True),
    # a real maxmemory: Redis lets a script whose first write frees
    # (ZREMRANGEBYSCORE) go on writing, so it may answer or refuse
    ("real OOM (maxmemory 1)", "one", "maxmemory", None),
    # the session noted as open, the slot given back: not waited for
    ("drop before opened", "one", [cmd(1, "drop", "opened")], None),
    ("stall at opened", "one", [reply(1, "stall", "opened", ms=STALL)],
     False),
    ("drop before release", "one", [cmd(1, "drop", "release")], None),
    ("OOM for release", "one", [cmd(1, "error", "release", error="oom")],
     False),
    # a limit learned, written to the fleet
    ("drop before limits", "limit", [cmd(1, "drop", "limits")], None),
    ("OOM for limits", "limit", [cmd(1, "error", "limits", error="oom")],
     False),
    ("garbage for limits", "limit", [reply(1, "garbage", "limits")], False),
    ("stall at limits", "limit", [reply(1, "stall", "limits", ms=STALL)],
     False),
    # two sessions: the first one's owed replies read with the second
    # acquire's
    ("two sessions: OOM for opened, read by the next acquire", "two",
     [cmd(1, "error", "opened", error="oom")], True),
    ("two sessions: garbage for release", "two",
     [reply(1, "garbage", "release")], True),
    ("two sessions: stall at release", "two",
     [reply(1, "stall", "release", ms=STALL)], True),
    ("two sessions: drop before the first release", "two",
     [cmd(1, "drop", "release")], True),
    ("two sessions: NOSCRIPT for the second acquire", "two",
     [cmd(2, "error", "acquire", error="noscript")], True),
    ("two sessions: stall at the second acquire", "two",
     [reply(2, "stall", "acquire", ms=STALL)], True),
    # the lease renewed (its own connection) while the dot waits
    ("renewal stalled", "slow", [reply(1, "stall", "renew", ms=STALL),
                                 reply(2, "stall", "renew", ms=STALL)],
     None),
    ("renewal dropped", "slow", [cmd(1, "drop", "renew")], None),
]

STATUS_RX = re.compile(r": to=<([^>]*)>,.*status=(\w+)")


def outcome(agent, before):
    """outcome - the run's log lines after BEFORE: {rcpt: [status]}, the
    fleet warnings"""
    lines = agent.log_lines()[before:]
    st = {}
    for l in lines:
        m = STATUS_RX.search(l)
        if m:
            st.setdefault(m.group(1), []).append(m.group(2))
    return st, [l for l in lines if "fleet state:" in l]


def summary(out):
    """summary - the status line without its timing"""
    return re.sub(r" in [\d.]+s", "", out.strip())


baselines = {}


def baseline(kind):
    """baseline - the server KIND without a fault in Redis: the status
    line and the time"""
    if kind not in baselines:
        sink = SmtpSink(SERVERS[kind])
        port = sink.start()
        a = rrtest.Agent(name="base-" + kind, deadline="30s",
                         relay="[127.0.0.1]:%d" % port, extra_text=FLEET)
        redis.command("FLUSHALL")
        proxy.set_script([])
        t0 = time.monotonic()
        r = a.run(RCPTS, queue_id="89B" + kind.upper())
        baselines[kind] = (r, time.monotonic() - t0)
        sink.stop()
        is_(r.rc, 0, "without a fault, server %s: delivered (%s)"
            % (kind, r.out.strip()))
    return baselines[kind]


def pipe_case(k, name, kind, rules, waited, proxy=proxy, fleet=FLEET):
    """pipe_case - case K: one run with the fault, one after it"""
    base, base_el = baseline(kind)
    sink = SmtpSink(SERVERS[kind])
    port = sink.start()
    # an agent of its own: a fresh host state (the fleet's trouble is
    # marked in it for a minute)
    a = rrtest.Agent(name="case%02d" % k, deadline="30s",
                     relay="[127.0.0.1]:%d" % port, extra_text=fleet)
    redis.command("FLUSHALL")
    proxy.set_script(rules if isinstance(rules, list) else [])
    if rules == "refuse":
        proxy.refuse()
    elif rules == "blackhole":
        proxy.blackhole()
    elif rules == "hang":
        proxy.hang()
    elif rules == "maxmemory":
        redis.command("CONFIG", "SET", "maxmemory", "1")
    t0 = time.monotonic()
    r = a.run(RCPTS, queue_id="89F%02d" % k)
    el = time.monotonic() - t0
    fired = fired_now(proxy, rules)
    proxy.set_script([])
    proxy.accept()
    proxy.blackhole(False)
    proxy.hangup()
    redis.command("CONFIG", "SET", "maxmemory", "0")
    st, warn = outcome(a, 0)
    got = sorted(x for m in sink.messages() for x in m["rcpts"])
    ok(r.rc == 0 and summary(r.out) == summary(base.out),
       "%s: %s" % (name, summary(r.out)),
       "exit %r %r, without the fault %r" % (r.rc, r.out, base.out))
    is_(got, sorted(RCPTS), "%s: each recipient taken once" % name)
    ok(all(v == ["sent"] for v in st.values()) and len(st) == len(RCPTS),
       "%s: each logged sent once, none deferred" % name, st)
    ok(el < base_el + BOUND, "%s: %.2fs (%.2fs without the fault)"
       % (name, el, base_el))
    if isinstance(rules, list):
        ok(fired, "%s: the fault was injected" % name,
           "commands seen: %r" % proxy.labels())
    if waited is True:
        is_(len(warn), 1, "%s: the log says once that the host's own state "
            "is used" % name)
    elif waited is False:
        is_(warn, [], "%s: not waited for, nothing to say" % name)
    if r.err:
        diag("stderr: %s" % r.err[:300])
    # Redis well again: the next run delivers too
    sink.set_script({})
    r2 = a.run(["again@d1.test"], queue_id="89G%02d" % k)
    ok(r2.rc == 0 and "again@d1.test" in [x for m in sink.messages()
                                           for x in m["rcpts"]],
       "%s: then the next run delivers" % name, r2.out)
    sink.stop()
    rrtest.wait_until(lambda: not proxy.conns or all(c.closed for c in
                                                     proxy.conns), 5)


for k, case in enumerate(CASES, 1):
    pipe_case(k, *case)

# on 127.0.0.1: a connect that hangs (the listener's queue full), a stall
tcp = RespProxy(redis.sock, ("127.0.0.1", 0))
TCP_FLEET = FLEET.replace(proxy.addr, tcp.start())
for k, case in enumerate([
        ("TCP: the connect hangs", "one", "hang", True),
        ("TCP: stall at acquire", "one",
         [reply(1, "stall", "acquire", ms=STALL)], True),
        ("TCP: drop before acquire", "one", [cmd(1, "drop", "acquire")],
         True)], len(CASES) + 1):
    pipe_case(k, *case, proxy=tcp, fleet=TCP_FLEET)

# --- LMTP mode: one resident agent, four messages in one LMTP session ------
# The fault at a later message's look at Redis, or the replies one
# message's session left owed read with the next one's; Redis refusing
# or silent from the second message on. Every recipient of every message
# answered 250 once, taken once, no message slower than the bound.
LMTP_CASES = [
    ("stall at the second acquire", [reply(2, "stall", "acquire",
                                           ms=STALL)]),
    ("OOM for the first opened, owed to the next look", [
        cmd(1, "error", "opened", error="oom")]),
    ("garbage for the first release", [reply(1, "garbage", "release")]),
    ("drop in the middle of the second acquire's reply", [
        reply(2, "drop", "acquire", cut=5)]),
    ("NOSCRIPT for the second acquire", [cmd(2, "error", "acquire",
                                             error="noscript")]),
    ("every reply from the 8th on stalled", [
        dict(on="reply", n=8, kind="stall", ms=STALL, times=50)]),
    ("Redis refusing from the second message on", "refuse"),
    ("Redis silent from the second message on", "blackhole"),
]
from lmtpclient import LmtpAgent

for k, (name, rules) in enumerate(LMTP_CASES, 1):
    sink = SmtpSink({})
    port = sink.start()
    a = rrtest.Agent(name="lmtp%02d" % k, deadline="30s",
                     relay="[127.0.0.1]:%d" % port,
                     extra_text=FLEET + "[lmtp]\ndeadline = 30s\n"
                     "idle_timeout = 10s\n")
    redis.command("FLUSHALL")
    proxy.set_script(rules if isinstance(rules, list) else [])
    s = LmtpAgent(a, timeout=20)
    answers, slow, want = [], [], []
    ok(s.reply() and s.cmd("LHLO postfix.test").startswith("250"),
       "LMTP %s: greeting" % name)
    for m in range(4):
        if m == 1 and rules == "refuse":
            proxy.hangup()
            proxy.refuse()
        elif m == 1 and rules == "blackhole":
            proxy.blackhole()
            proxy.hangup()
        rc = ["m%dr%d@d%d.test" % (m, i, i % 2 + 1) for i in range(3)]
        want += rc
        t0 = time.monotonic()
        mail, rr, data, final = s.transaction(
            "s@src.test", rc, rrtest.sample_message("s@src.test", rc),
            ident="89L%02d%d" % (k, m))
        el = time.monotonic() - t0
        answers += [x[:3] for x in final]
        if el > 0.5 + BOUND:
            slow.append((m, round(el, 2)))
        if len(final) != len(rc):
            diag("message %d: %r %r %r" % (m, rr, data, final))
    s.cmd("QUIT")
    s.wait(10)
    s.kill()
    fired = fired_now(proxy, rules)
    labels = proxy.labels()
    proxy.set_script([])
    proxy.accept()
    proxy.blackhole(False)
    proxy.hangup()
    got = sorted(x for m in sink.messages() for x in m["rcpts"])
    st, warn = outcome(a, 0)
    is_(answers, ["250"] * 12, "LMTP %s: each recipient answered 250 once"
        % name)
    is_(got, sorted(want), "LMTP %s: each taken once" % name)
    ok(all(v == ["sent"] for v in st.values()) and len(st) == 12,
       "LMTP %s: each logged sent once" % name, st)
    is_(slow, [], "LMTP %s: no message slower than %.1fs" % (name,
                                                             0.5 + BOUND))
    if isinstance(rules, list):
        ok(fired, "LMTP %s: the fault was injected" % name,
           "commands seen: %r" % labels)
    is_(len(warn), 1, "LMTP %s: the log says once that the host's own "
        "state is used" % name)
    sink.stop()
done()
