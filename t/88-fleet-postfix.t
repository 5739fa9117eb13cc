#!/usr/bin/env python3
# 88-fleet-postfix.t - the fleet state (DESIGN §12) through real Postfix:
# two sending Postfix instances (relay A, relay B), each handing its mail
# to rapidretry-agent in LMTP mode (lmtp(8) -> spawn(8), maxproc 20), one
# redis-server of the test's own on a unix socket, scripted receivers on
# 127.0.0.1 that count what crosses the wire; the agents' EHLO names
# (relay-a.test, relay-b.test) say whose session the receiver saw.
#   1. relay A learns limit 3 from a limit-3 receiver; relay B's first
#      message (20 recipients) goes in transactions of at most 3 RCPTs,
#      none refused, each recipient delivered once;
#   2. a dead receiver (421 greeting) marked down by A: B defers its mail
#      with 4.4.1 "delivery temporarily suspended" and connects not once;
#      after down_time, both relays flushed at once: exactly one probe
#      session from the fleet; the receiver back: all delivered once;
#   3. a fleet-wide cap of 4 sessions on one slow receiver, 20 messages
#      on each relay at once: never more than 4 sessions in use at once,
#      counted at the receiver; each delivered once;
#   4. a run of 200 messages while Redis is paused (SIGSTOP), stopped and
#      started again: each delivered once, none deferred, no delivery
#      held up by Redis longer than about timeout_ms; after the fallback
#      minute the relays use the restarted Redis again.
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from badserver import BadServer
from lmtpsender import LmtpSender
from mxtest import AddrSink
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()
if not shutil.which("redis-server") or not shutil.which("redis-cli"):
    rrtest.skip_all("redis-server is not installed")

T_START = time.monotonic()
TIMEOUT_MS = 200
DOWN_TIME = 8
PREFIX = "rr88:"

# --- Redis: the test's own, on a unix socket -------------------------------
rdir = rrtest.subdir("redis", owner=rrtest.TEST_USER)
SOCK = os.path.join(rdir, "redis.sock")


def redis_start():
    """redis_start - a redis-server on SOCK only (no TCP port, nothing
    saved), stopped at exit."""
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    p = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", SOCK,
                          "--unixsocketperm", "777", "--save", "",
                          "--appendonly", "no", "--dir", rdir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop():
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
    rrtest.at_cleanup(stop)
    if not rrtest.wait_until(lambda: redis_cli("PING") == "PONG", 10,
                             what="redis answering"):
        rrtest.bail("redis-server did not start")
    return p


def redis_cli(*args):
    """redis_cli - one command to the test's Redis; its output, stripped
    ("" when it does not answer within 2 s)."""
    try:
        p = subprocess.run(["redis-cli", "-s", SOCK] + list(args),
                           capture_output=True, text=True, timeout=2)
    except subprocess.TimeoutExpired:
        return ""
    return p.stdout.strip()


def server_field(port, field):
    """server_field - FIELD of the fleet's state of 127.0.0.1:PORT."""
    return redis_cli("HGET", "%ss:127.0.0.1:%d" % (PREFIX, port), field)


redis = redis_start()

# --- the receivers -----------------------------------------------------------
lim = SmtpSink({"hostname": "limit3.test", "rcpt_max": 3})
plim = lim.start()
rrtest.at_cleanup(lim.stop)
dead = BadServer("421")
pdead = dead.start()
slow = SmtpSink({"hostname": "slow.test",
                 "rules": [{"cmd": "DOT", "delay": 1.0}]})
pslow = slow.start()
rrtest.at_cleanup(slow.stop)
good = SmtpSink({"hostname": "good.test",
                 "rules": [{"cmd": "DOT", "delay": 0.05}]})
pgood = good.start()
rrtest.at_cleanup(good.stop)

CAP = 4
CONF = """
[schedule]
failure_cohort = 2
down_time = %ds
slot_wait = 60s
[concurrency]
127.0.0.1:%d = %d
[state]
backend = redis
redis = unix:%s
prefix = %s
timeout_ms = %d
lease_time = 10s
[routes]
lim.test = relay:[127.0.0.1]:%d
dead.test = relay:[127.0.0.1]:%d
slow.test = relay:[127.0.0.1]:%d
run.test = relay:[127.0.0.1]:%d
""" % (DOWN_TIME, pslow, CAP, SOCK, PREFIX, TIMEOUT_MS, plim, pdead, pslow,
       pgood)


def relay(name):
    """relay - a sending Postfix whose mail goes to its own agent in LMTP
    mode; up to 20 LMTP connections (agents) at once."""
    agent = rrtest.Agent(name=name + "/agent", relay="", deadline="120s",
                         helo_name=name + ".test",
                         timeouts={"connect_timeout": "5s",
                                   "helo_timeout": "10s"},
                         extra_text=CONF)
    return LmtpSender(name, relay_port=pgood, agent=agent, main={
        "transport_maps": "inline:{src.test=discard:}",
        "rapidretry_initial_destination_concurrency": "20",
        "rapidretry_destination_concurrency_limit": "20",
    }).start()


A, B = relay("relay-a"), relay("relay-b")


def submit(snd, msgs):
    """submit - messages (each a list of recipients) through the relay's
    smtpd on one connection; the number accepted."""
    n = 0
    with smtplib.SMTP("127.0.0.1", snd.port, timeout=60) as c:
        c.ehlo("client.test")
        for rcpts in msgs:
            c.sendmail("s@src.test", rcpts,
                       rrtest.sample_message("s@src.test", rcpts).encode())
            n += 1
    return n


STATUS_RX = re.compile(r"lmtp\[\d+\]: ([0-9A-F]+): to=<([^>]+)>,.*"
                       r" delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+),"
                       r" dsn=([\d.]+), status=(\w+) ?(.*)$")


def statuses(snd, since=0, domain=None):
    """statuses - Postfix's delivery lines from mark SINCE on:
    [(rcpt, dsn, status, text, agent seconds)], the agent's seconds
    being the connection set-up and transmission parts of delays=."""
    res = []
    for l in snd.log_lines(since):
        m = STATUS_RX.search(l)
        if not m or (domain and not m.group(2).endswith("@" + domain)):
            continue
        res.append((m.group(2).lower(), m.group(7), m.group(8), m.group(9),
                    float(m.group(5)) + float(m.group(6))))
    return res


def conns_of(sink, name):
    """conns_of - the sink's connection numbers whose EHLO named NAME."""
    return sorted({e["conn"] for e in sink.commands("EHLO")
                   if name in e["line"]})


def wait_statuses(snd, since, domain, n, timeout):
    """wait_statuses - statuses() once it holds N lines (or at the
    timeout)."""
    return rrtest.wait_until(
        lambda: (lambda s: s if len(s) >= n else None)(
            statuses(snd, since, domain)), timeout,
        what="%d status lines for %s in %s" % (n, domain, snd.name)) or \
        statuses(snd, since, domain)


# --- 1. a limit learned by relay A, used by relay B -------------------------------
RA = ["a%02d@lim.test" % i for i in range(20)]
RB = ["b%02d@lim.test" % i for i in range(20)]
submit(A, [RA])
rrtest.wait_until(lambda: len(lim.delivered()) >= 20, 60,
                  what="relay A's 20 delivered")
a_conns = conns_of(lim, "relay-a.test")
a_refused = len([e for e in lim.replies() if e["conn"] in a_conns
                 and e["line"].startswith("452")])
ok(a_refused >= 1 and [l for l in A.agent_log() if "learned limit 3" in l],
   "relay A met the limit (%d RCPTs refused with 452) and learned limit 3"
   % a_refused)
like(redis_cli("HGET", "%sm:127.0.0.1:%d" % (PREFIX, plim), "rcpt_limit"),
     r"^3$", "the limit is in the fleet's state")
submit(B, [RB])
rrtest.wait_until(lambda: len(lim.delivered()) >= 40, 60,
                  what="relay B's 20 delivered")
b_conns = conns_of(lim, "relay-b.test")
b_tx = [rcpts for conn, rcpts in lim.transactions() if conn in b_conns]
b_refused = [e["line"] for e in lim.replies() if e["conn"] in b_conns
             and e["line"].startswith("452")]
ok(b_tx and max(len(r) for r in b_tx) <= 3,
   "relay B's first session: at most 3 RCPTs per transaction %s"
   % [len(r) for r in b_tx])
is_(b_refused, [], "relay B: no RCPT refused on the wire")
is_(sorted(r for t in b_tx for r in t), sorted(RB),
    "relay B sent each of its 20 recipients once")
is_(sorted(r for r in lim.delivered() if r.startswith("b")), sorted(RB),
    "relay B: 20/20 delivered, each exactly once")
is_(sorted(r for r in lim.delivered() if r.startswith("a")), sorted(RA),
    "relay A: 20/20 delivered, each exactly once")
ok([l for l in B.agent_log() if "limit 3 the fleet learned" in l],
   "relay B's agent says where the limit came from")
is_(sorted(s[0] for s in statuses(B, 0, "lim.test") if s[2] == "sent"),
    sorted(RB), "relay B's Postfix logged each as sent")

# --- 2. a dead destination marked by relay A -------------------------------------
DA = ["da%d@dead.test" % i for i in range(2)]
DB = ["db%d@dead.test" % i for i in range(3)]
ma, mb = A.mark(), B.mark()
submit(A, [[r] for r in DA])
st = wait_statuses(A, ma, "dead.test", 2, 40)
is_(sorted((s[0], s[2]) for s in st), [(r, "deferred") for r in DA],
    "relay A: both deferred after a 421 greeting each")
is_(dead.counts()[0], 2, "the dead server saw relay A's 2 connections")
down_until = int(server_field(pdead, "down_until") or 0) / 1000
ok(down_until > time.time(), "relay A's failures marked it down for the "
   "fleet (%.1fs more)" % max(0, down_until - time.time()))
submit(B, [[r] for r in DB])
st = wait_statuses(B, mb, "dead.test", 3, 40)
t_b = time.time()
ok(len(st) == 3 and all(s[1] == "4.4.1" and s[2] == "deferred" and re.search(
    r"delivery temporarily suspended: host 127\.0\.0\.1\[127\.0\.0\.1\] "
    r"refused to talk to me: 421", s[3]) for s in st),
   "relay B's maillog: each of its 3 deferred 4.4.1 delivery temporarily "
   "suspended, with A's reason", detail=st)
is_(dead.counts()[0], 2, "relay B made no connection to the dead server")
if 0 < down_until < t_b:
    diag("relay B's deferrals came after the mark's expiry: the machine "
         "is slow; raise DOWN_TIME")


def flush_both():
    """flush_both - both relays retry their deferred mail at once."""
    ts = [threading.Thread(target=s.flush) for s in (A, B)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# the mark expires, the server still dead: one probe for the whole fleet
time.sleep(max(0, down_until - time.time() + 0.5))
ma, mb = A.mark(), B.mark()
flush_both()
wait_statuses(A, ma, "dead.test", 2, 40)
wait_statuses(B, mb, "dead.test", 3, 40)
is_(dead.counts()[0], 3, "after the expiry, 5 messages on two relays "
    "flushed at once: exactly one probe session from the fleet")
ok(all(s[2] == "deferred" for s in statuses(A, ma, "dead.test")
       + statuses(B, mb, "dead.test")), "the failed probe: all 5 deferred "
   "again")
# the server comes back on the same port: after the next expiry, all
down_until = int(server_field(pdead, "down_until") or 0) / 1000
dead.stop()
back = AddrSink("127.0.0.1", pdead, {"hostname": "back.test"})
back.start()
time.sleep(max(0, down_until - time.time() + 0.5))
end = time.monotonic() + 60
while len(back.delivered()) < 5 and time.monotonic() < end:
    flush_both()        # again if a retry came too early on a slow machine
    rrtest.wait_until(lambda: len(back.delivered()) >= 5, 15)
is_(back.delivered(), sorted(DA + DB), "the server back: the 5 delivered, "
    "each exactly once")
rrtest.wait_until(lambda: A.queue_empty() and B.queue_empty(), 20,
                  what="queues empty")
ok(A.queue_empty() and B.queue_empty(), "nothing left in either queue")

# --- 3. a fleet-wide cap of 4 sessions on one slow server ---------------------------
CA = ["ca%02d@slow.test" % i for i in range(20)]
CB = ["cb%02d@slow.test" % i for i in range(20)]
ma, mb = A.mark(), B.mark()
most_agents = [0, 0]
sampling = [True]


def agents_running(binary):
    """agents_running - processes running BINARY (each relay has its own
    copy of the agent), from /proc."""
    n = 0
    for pid in os.listdir("/proc"):
        try:
            n += pid.isdigit() and os.readlink("/proc/%s/exe" % pid) == binary
        except OSError:
            pass
    return n


def sample():
    while sampling[0]:
        for i, s in enumerate((A, B)):
            most_agents[i] = max(most_agents[i],
                                 agents_running(s.agent.binary))
        time.sleep(0.1)


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.monotonic()
ts = [threading.Thread(target=submit, args=(s, [[r] for r in rs]))
      for s, rs in ((A, CA), (B, CB))]
for t in ts:
    t.start()
for t in ts:
    t.join()
end = time.monotonic() + 120
while len(slow.delivered()) < 40 and time.monotonic() < end:
    # a session is stuck before its greeting on a slow machine: the
    # waiters defer 4.4.5 (DESIGN §11); their retry comes at the flush
    rrtest.wait_until(lambda: len(slow.delivered()) >= 40, 10)
    if len(slow.delivered()) < 40:
        flush_both()
t_cap = time.monotonic() - t0
sampling[0] = False
sampler.join()
deferred = [s for s in statuses(A, ma, "slow.test")
            + statuses(B, mb, "slow.test") if s[2] == "deferred"]
is_(slow.delivered(), sorted(CA + CB), "40 messages from 2 relays to the "
    "slow server: each delivered exactly once (%.1fs, %d deferred on the "
    "way)" % (t_cap, len(deferred)))
ok(slow.max_busy() <= CAP, "fleet cap %d: at most %d sessions in use at "
   "once at the receiver" % (CAP, slow.max_busy()))
is_(slow.max_busy(), CAP, "and the cap was reached: the load was there")
ok(min(most_agents) >= 10, "up to 20 agents on each relay at once (at "
   "most %d and %d running)" % tuple(most_agents))
diag("slow server: %d connections, at most %d open at once (kept ones "
     "idle, holding no slot), at most %d in use" % (
         slow.connections(), slow.max_active(), slow.max_busy()))
if deferred:
    diag("deferred on the way: %s" % sorted({s[3][:80] for s in deferred}))

# --- 4. 200 messages while Redis is paused, stopped and started again ----------------
N = 100
RUN_A = ["ra%03d@run.test" % i for i in range(N)]
RUN_B = ["rb%03d@run.test" % i for i in range(N)]
ma, mb = A.mark(), B.mark()
la, lb = len(A.agent_log()), len(B.agent_log())
events = {}


def trickle(snd, rcpts, pace=0.05):
    """trickle - one message per recipient, PACE seconds apart."""
    with smtplib.SMTP("127.0.0.1", snd.port, timeout=60) as c:
        c.ehlo("client.test")
        for r in rcpts:
            c.sendmail("s@src.test", [r],
                       rrtest.sample_message("s@src.test", [r]).encode())
            time.sleep(pace)


def ndone():
    return len([r for r in good.delivered() if r.startswith("r")])


ta = threading.Thread(target=trickle, args=(A, RUN_A))
ta.start()
rrtest.wait_until(lambda: ndone() >= 30, 60, what="30 delivered")
redis.send_signal(signal.SIGSTOP)          # paused: answers nothing
events["stop"] = time.time()
time.sleep(3)
redis.kill()                               # and stopped
redis.wait()
events["kill"] = time.time()
tb = threading.Thread(target=trickle, args=(B, RUN_B))
tb.start()
rrtest.wait_until(lambda: ndone() >= 150, 90, what="150 delivered")
redis = redis_start()                      # and started again
events["start"] = time.time()
ta.join()
tb.join()
rrtest.wait_until(lambda: ndone() >= 2 * N, 90, what="200 delivered")
rrtest.wait_until(lambda: A.queue_empty() and B.queue_empty(), 30,
                  what="queues empty")
is_([r for r in good.delivered() if r.startswith("r")],
    sorted(RUN_A + RUN_B), "200 messages: each delivered exactly once")
st = statuses(A, ma, "run.test") + statuses(B, mb, "run.test")
is_([s for s in st if s[2] != "sent"], [], "none deferred because of "
    "Redis (%d status lines, all sent)" % len(st))
ok(A.queue_empty() and B.queue_empty(), "nothing left in either queue")
worst = max(s[4] for s in st) if st else -1
bound = TIMEOUT_MS / 1000 * 5 + 2
ok(0 <= worst <= bound, "the slowest delivery took the agent %.2fs "
   "(bound: 5 x timeout_ms + 2s = %.1fs)" % (worst, bound))
trouble = [l for l in A.agent_log()[la:] if "fleet state:" in l
           and "own state" in l]
ok(trouble, "relay A's agents say Redis failed and the host's own state "
   "is used")
ok([l for l in B.agent_log()[lb:] if "fleet state:" in l],
   "relay B's agents, started after Redis stopped, say so too")
diag("Redis paused at +0s, stopped at +%.1fs, started again at +%.1fs; "
     "%d lines of fleet trouble logged on A, %d on B" % (
         events["kill"] - events["stop"], events["start"] - events["stop"],
         len(trouble), len([l for l in B.agent_log()[lb:]
                            if "fleet state:" in l])))

# the host's own state for a minute (DESIGN §12), then Redis again
# (relay B's minute began at its first message after the stop)
time.sleep(max(0, events["kill"] + 65 - time.time()))
seen = [int(server_field(pgood, "sessions") or 0)]
for snd, r in ((A, "back-a@run.test"), (B, "back-b@run.test")):
    m, n = snd.mark(), len(snd.agent_log())
    submit(snd, [[r]])
    st = wait_statuses(snd, m, "run.test", 1, 30)
    seen.append(int(server_field(pgood, "sessions") or 0))
    is_([(s[0], s[2]) for s in st], [(r, "sent")], "after the fallback "
        "minute: one more message on %s, sent" % snd.name)
    is_([l for l in snd.agent_log()[n:] if "fleet state:" in l], [],
        "with no fleet trouble logged")
is_([seen[1] - seen[0], seen[2] - seen[1]], [1, 1], "each relay's session "
    "is counted in the restarted Redis: the fleet's state again")
diag("run time %.0fs" % (time.monotonic() - T_START))
done()
