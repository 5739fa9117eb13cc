#!/usr/bin/env python3
# 38-schedule.t - destination scheduling (DESIGN §11) with the agent run
# as pipe(8) runs it (static nexthop), against servers that are bad on
# purpose, counted at the socket:
#   1. a port nobody listens on: after the cohort, deferred 4.4.1
#      "delivery temporarily suspended: connect to ...", no connect; after
#      the down time one probe, and the server back delivers; the same
#      for SYNs dropped (a listener whose accept queue is full: connect
#      timeouts);
#   2. a server that greets 421: exactly the cohort's connections, then
#      none; the probe after the down time fails and marks it down again;
#      --flush-destination makes the next delivery connect;
#   3. a tarpit (accepts, never greets): 8 agents at once, never more than
#      the window of sessions on it; the others deferred 4.4.5 at once
#      ("concurrency limit reached"), none held for the greeting timeout;
#   4. SIGKILL of the agent holding the only slot: the next agent gets it
#      at once; while the holder lives, a third is deferred 4.4.5;
#   5. a state file of garbage: moved aside, made again, mail delivered;
#   6. 20 agents racing on one state and a slow healthy server, cap 3:
#      never more than 3 sessions, each recipient delivered exactly once;
#   7. --destinations (text, JSON, run as root: no file becomes root's),
#      -q shows the live state; [schedule] state = none switches it off.
import json
import os
import re
import signal
import socket
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
from smtpsink import SmtpSink
from mxtest import AddrSink

rrtest.require_root()

agent = rrtest.Agent(relay="[127.0.0.1]:25", deadline="60s",
                     timeouts={"connect_timeout": "3s",
                               "helo_timeout": "3s"})
STATE = os.path.join(agent.journal_dir, "destinations.state")
qn = [0]


def sched(**kv):
    """sched - the agent's [schedule] section with KV."""
    base = {"failure_cohort": "2", "down_time": "3s"}
    base.update(kv)
    agent.write_conf(extra_text="\n[schedule]\n" + "".join(
        "%s = %s\n" % (k, v) for k, v in base.items()))


def run(port, rcpt="r@dest.test", **kw):
    """run - one agent run to [127.0.0.1]:PORT; (result, its log lines)."""
    qn[0] += 1
    qid = "5C%08X" % qn[0]
    before = len(agent.log_lines())
    res = agent.run([rcpt], queue_id=qid, nexthop="[127.0.0.1]:%d" % port,
                    **kw)
    return res, [l for l in agent.log_lines()[before:] if qid in l]


def status(log):
    st = rrtest.agent_status(log)
    return (st[0][2], st[0][3], st[0][4]) if len(st) == 1 else None


def destinations(*extra):
    p = subprocess.run([agent.binary, "--destinations", "-c", agent.conf]
                       + list(extra), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def parallel(n, port):
    """parallel - N agent runs at once; [(result, log)] in start order."""
    out = [None] * n

    def one(i):
        out[i] = run(port, rcpt="p%02d@dest.test" % i)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


# --- 1. nobody listens ------------------------------------------------------
sched()
dead = rrtest.free_port()
r1, l1 = run(dead)
r2, l2 = run(dead)
like(r1.out, r"^4\.4\.1 connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
     r"Connection refused" % dead, "1st try: the connect failure")
is_(r2.rc, 75, "2nd try: deferred too")
t0 = time.monotonic()
r3, l3 = run(dead)
like(r3.out, r"^4\.4\.1 delivery temporarily suspended: connect to "
     r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: Connection refused" % dead,
     "after the cohort of 2: 4.4.1 delivery temporarily suspended, with "
     "the first failure's reason")
is_(status(l3)[:2] if status(l3) else None, ("4.4.1", "deferred"),
    "its log line: dsn=4.4.1, status=deferred")
ok([l for l in l3 if "is marked down" in l and "not connecting" in l],
   "the log says it did not connect")
rc, out, err = destinations()
like(out, r"127\.0\.0\.1:%d .*down for \d+s more: connect to" % dead,
     "--destinations shows it down, with why")
# the server comes back; after the down time one delivery probes it
sink = AddrSink("127.0.0.1", dead, {"hostname": "back.test"})
sink.start()
r4, l4 = run(dead)
like(r4.out, r"^4\.4\.1 delivery temporarily suspended", "still down "
     "before the expiry: not tried (%d connections)" % sink.connections())
is_(sink.connections(), 0, "nothing connected while it was down")
time.sleep(max(0, 3.3 - (time.monotonic() - t0)))
r5, l5 = run(dead)
like(r5.out, r"^2\.0\.0", "after the down time: the probe delivers")
is_(sink.connections(), 1, "one connection: the probe")
rc, out, err = destinations()
like(out, r"127\.0\.0\.1:%d .*, up$" % dead, "up again, failures cleared")
sink.stop()

# --- 1b. SYNs dropped: a listener whose accept queue is full ------------------
blk = socket.socket()
blk.bind(("127.0.0.1", 0))
blk.listen(0)
pblk = blk.getsockname()[1]
fillers = []
for i in range(3):  # queue full: the kernel drops later SYNs
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", pblk))
    except BlockingIOError:
        pass
    fillers.append(c)
time.sleep(0.2)
rs = [run(pblk) for i in range(3)]
like(rs[0][0].out, r"^4\.4\.1 connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
     r"Connection timed out" % pblk, "SYNs dropped: the connect times out "
     "(%.1fs, connect_timeout 3s)" % rs[0][0].elapsed)
like(rs[2][0].out, r"^4\.4\.1 delivery temporarily suspended: connect to "
     r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: Connection timed out" % pblk,
     "after 2 timeouts: suspended")
ok(rs[2][0].elapsed < 1.5, "without a connection attempt (%.1fs)"
   % rs[2][0].elapsed)
for c in fillers:
    c.close()
blk.close()

# --- 2. a 421 greeting ------------------------------------------------------
bad = BadServer("421")
p421 = bad.start()
res = [run(p421) for i in range(5)]
is_(bad.counts()[0], 2, "421 greeting: 2 connections (the cohort), then "
    "none for 3 more messages")
like(res[0][0].out, r"^4\.\d\.\d host 127\.0\.0\.1\[127\.0\.0\.1\] refused "
     r"to talk to me: 421 4\.3\.2", "the first: the server's own words")
is_([r.out.split(":")[0] for r, l in res[2:]],
    ["4.4.1 delivery temporarily suspended"] * 3,
    "the later ones: suspended, not connected")
like(res[4][0].out, r"suspended: host 127\.0\.0\.1\[127\.0\.0\.1\] refused "
     r"to talk to me: 421", "with the 421 as the reason")
time.sleep(3.3)
rp, lp = run(p421)
is_(bad.counts()[0], 3, "after the down time: one probe connection")
rq, lq = run(p421)
is_(bad.counts()[0], 3, "the failed probe marks it down again at once")
like(rq.out, r"^4\.4\.1 delivery temporarily suspended", "deferred without "
     "a connection")
p = subprocess.run([agent.binary, "--flush-destination",
                    "127.0.0.1:%d" % p421, "-c", agent.conf],
                   capture_output=True, text=True)
is_((p.returncode, p.stdout.strip()), (0, "127.0.0.1:%d: 1 server flushed"
                                       % p421), "--flush-destination")
rf, lf = run(p421)
is_(bad.counts()[0], 4, "after the flush the next delivery connects")
bad.stop()

# --- 3. a tarpit, 8 agents at once -------------------------------------------
sched(concurrency="10", initial_concurrency="3", slot_wait="20s",
      failure_cohort="3")
tar = BadServer("tarpit")
ptar = tar.start()
t0 = time.monotonic()
out = parallel(8, ptar)
elapsed = time.monotonic() - t0
is_(tar.counts()[2], 3, "the tarpit saw at most 3 sessions at once (the "
    "slow-start window), 8 agents")
busy = [(r, l) for r, l in out if r.out.startswith("4.4.5 ")]
timed = [(r, l) for r, l in out if "timed out" in r.out]
is_((len(busy), len(timed)), (5, 3), "5 deferred 4.4.5, 3 timed out in the "
    "greeting")
like(busy[0][0].out if busy else "", r"^4\.4\.5 concurrency limit reached: "
     r"3 of 3 sessions to 127\.0\.0\.1\[127\.0\.0\.1\]:%d in use" % ptar,
     "the reason names the server and its window")
ok(busy and max(r.elapsed for r, l in busy) < 2.9,
   "the 4.4.5 ones were not held for the greeting timeout (slowest %.1fs)"
   % max([r.elapsed for r, l in busy] or [0]))
ok(all(r.rc == 75 and status(l) and status(l)[1] == "deferred"
       for r, l in out), "all 8 deferred with a status, none lost")
rt, lt = run(ptar)
like(rt.out, r"^4\.4\.1 delivery temporarily suspended: conversation "
     r"with 127\.0\.0\.1\[127\.0\.0\.1\] timed out while receiving the "
     r"initial server greeting", "3 greeting timeouts: the tarpit is down")
tar.stop()

# --- 4. SIGKILL of the slot holder ----------------------------------------------
sched(concurrency="1", initial_concurrency="1", slot_wait="20s",
      failure_cohort="0")
agent.write_conf(timeouts={"connect_timeout": "3s", "helo_timeout": "4s"},
                 extra_text=agent.settings["extra_text"])
tar = BadServer("tarpit")
ptar = tar.start()
pw = rrtest.ensure_user()
holder = subprocess.Popen(
    [agent.binary, "-c", agent.conf, "-i", "5CKILL1", "-n",
     "[127.0.0.1]:%d" % ptar, "-f", "s@src.test", "--", "k@dest.test"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    env=agent.env(), user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
holder.stdin.write(rrtest.sample_message("s@src.test", ["k@dest.test"])
                   .encode())
holder.stdin.close()
rrtest.wait_until(lambda: tar.counts()[1] == 1, 10, what="holder connected")
rc_, lc_ = run(ptar)
like(rc_.out, r"^4\.4\.5 concurrency limit reached: 1 of 1 sessions",
     "while the holder lives, the cap of 1 holds: 4.4.5")
holder.send_signal(signal.SIGKILL)
holder.wait()
t0 = time.monotonic()
rb, lb = run(ptar)
is_(tar.counts()[0], 2, "after SIGKILL the next agent connects at once "
    "(no wait for the lease to expire)")
like(rb.out, r"^4\.4\.2 .*timed out", "and waits for the greeting as "
     "configured (%.1fs)" % (time.monotonic() - t0))
tar.stop()

# --- 5. a garbage state file ----------------------------------------------------
sched()
good = SmtpSink({"hostname": "good.test"})
pgood = good.start()
rrtest.at_cleanup(good.stop)
rrtest.write_file(STATE, "this is no database\n" * 100, owner=rrtest.TEST_USER)
rg, lg = run(pgood)
like(rg.out, r"^2\.0\.0", "with a garbage state file: delivered")
ok([l for l in agent.log_lines() if "damaged or not ours" in l],
   "the log says the state file was made again")
with open(STATE, "rb") as f:
    is_(f.read(4), b"RRS1", "the state file is ours again")
ok(os.path.exists(STATE + ".corrupt"), "the old one kept aside (.corrupt)")

# --- 6. 20 agents racing, cap 3 --------------------------------------------------
sched(concurrency="3", initial_concurrency="3", slot_wait="30s")
good.set_script({"hostname": "good.test",
                 "rules": [{"cmd": "CONNECT", "delay": 0.3}]})
before = len(good.messages())
out = parallel(20, pgood)
got = sorted(r for m in good.messages()[before:] for r in m["rcpts"])
is_(got, sorted("p%02d@dest.test" % i for i in range(20)),
    "20 agents, cap 3: every recipient delivered exactly once")
is_([r.rc for r, l in out], [0] * 20, "all 20 runs exit 0")
# sessions at once, from the server's transcript: accept .. QUIT
spans = {}
for e in good.transcript():
    s = spans.setdefault(e["conn"], [e["t"], e["t"]])
    if e["dir"] == "c" and e["line"].upper().startswith("QUIT"):
        s[1] = e["t"]
    elif s[1] == s[0] or e["t"] < s[1]:
        s[1] = max(s[1], e["t"])
events = sorted([(a, 1) for a, b in spans.values()] +
                [(b, -1) for a, b in spans.values()], key=lambda x: (x[0], x[1]))
most = cur = 0
for t, d in events:
    cur += d
    most = max(most, cur)
ok(1 < most <= 3, "never more than 3 sessions at once (%d)" % most)

# --- 7. what the administrator sees ---------------------------------------------
rc, out, err = destinations("--json")
rows = {r["server"]: r for r in json.loads(out)} if rc == 0 else {}
row = rows.get("127.0.0.1:%d" % pgood, {})
is_((row.get("cap"), row.get("down"), row.get("sessions")), (3, False, 0),
    "--json: the healthy server, cap 3, up, no session now")
ok(row.get("sessions_total", 0) >= 20, "and its sessions counted (%s)"
   % row.get("sessions_total"))
owners = set(os.stat(os.path.join(agent.journal_dir, f)).st_uid
             for f in os.listdir(agent.journal_dir))
is_(sorted(owners), [rrtest.ensure_user().pw_uid],
    "--destinations run as root made no file of root's")
agent.write_conf(relay="", extra_text="\n[schedule]\nconcurrency = 3\n[routes]\n"
                 "dest.test = relay:[127.0.0.1]:%d\n" % pgood)
p = subprocess.run([agent.binary, "-q", "dest.test", "-c", agent.conf],
                   capture_output=True, text=True)
like(p.stdout, r"state: sessions 0/\d+ \(cap 3\), up", "-q shows the live "
     "state of the server")
logcli = os.path.join(os.path.dirname(rrtest.agent_binary()),
                      "rapidretry-log")
p = subprocess.run([logcli, "-c", agent.conf, "--stats", "--json"],
                   capture_output=True, text=True)
by = json.loads(p.stdout).get("deferred_by_reason", {}) if p.returncode == 0 \
    else {}
ok(by.get("concurrency", 0) >= 6 and by.get("suspended", 0) >= 7
   and by.get("connect", 0) >= 2 and by.get("timeout", 0) >= 3,
   "rapidretry-log --stats counts the deferrals by reason: %r" % by)
p = subprocess.run([logcli, "-c", agent.conf, "--prometheus"],
                   capture_output=True, text=True)
like(p.stdout, r'rapidretry_deferrals\{reason="concurrency"\} %d\n'
     % by.get("concurrency", -1), "and --prometheus the same")
# off: the 421 server is tried every time
agent.write_conf(relay="[127.0.0.1]:25",
                 extra_text="\n[schedule]\nstate = none\n")
bad = BadServer("421")
p421 = bad.start()
for i in range(4):
    run(p421)
is_(bad.counts()[0], 4, "[schedule] state = none: no scheduling, 4 tries "
    "4 connections")
done()
