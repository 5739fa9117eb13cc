#!/usr/bin/env python3
# 87-fleet-redis.t - destination state shared by a fleet of relays in
# Redis (DESIGN §12): a real redis-server on a unix socket of the test's
# own (configured by the shipped redis.conf.example), two relays (two
# agent configurations with their own journals, host state and names,
# [state] backend = redis):
#   1. a server that greets 421: relay A's two failures mark it down for
#      the fleet; relay B defers at once, without a connection;
#   1b. relay A learns limit 3 from a limit-3 server; relay B's first
#      session to it sends at most 3 RCPTs per transaction, none refused;
#      -q and --destinations on each relay say where each number comes
#      from (local, fleet, learned by which relay's name and when);
#   2. a fleet-wide cap: a tarpit, cap 2, three agents on each relay at
#      once: never more than 2 sessions on it, counted at the socket;
#   3. a relay that dies (SIGKILL of the slot holder): its slot lapses
#      after [state] lease_time (3 s here), not before; then B gets it;
#   4. Redis paused (SIGSTOP) and stopped: deliveries go on with the
#      host's own state, each within the command timeout, all delivered;
#      the log says so once; --destinations shows the fleet's view;
#   5. rapidretry-log --stats and --prometheus count each fallback by
#      reason (timeout, refused; an error reply: error).
import json
import os
import shutil
import signal
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

rrtest.require_root()
if not shutil.which("redis-server"):
    rrtest.skip_all("redis-server is not installed")

rdir = rrtest.subdir("redis", owner=rrtest.TEST_USER)
SOCK = os.path.join(rdir, "redis.sock")


TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the shipped redis.conf.example, only the socket's path and mode (the
# test's user is no member of a redis group) and the folder replaced
EXAMPLE = rrtest.read_file(os.path.join(TOP, "redis.conf.example"))
RCONF = rrtest.write_file(os.path.join(rdir, "redis.conf"), EXAMPLE.replace(
    "unixsocket /run/redis/redis-server.sock", "unixsocket " + SOCK).replace(
    "unixsocketperm 770", "unixsocketperm 777") + "dir %s\n" % rdir)


def redis_start():
    p = subprocess.Popen(["redis-server", RCONF],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rrtest.at_cleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
    rrtest.wait_until(lambda: os.path.exists(SOCK), 10, what="redis socket")
    return p


redis = redis_start()
conf_get = subprocess.run(["redis-cli", "-s", SOCK, "CONFIG", "GET", "*"],
                          capture_output=True, text=True).stdout.split("\n")
got = dict(zip(conf_get[0::2], conf_get[1::2]))
is_([got.get(k) for k in ("port", "maxmemory-policy", "save", "appendonly")],
    ["0", "volatile-ttl", "", "no"], "redis-server runs with "
    "redis.conf.example: no TCP port, volatile-ttl, no persistence")
FLEET = ("\n[state]\nbackend = redis\nredis = unix:%s\nlease_time = 3s\n"
         "timeout_ms = 200\n" % SOCK)


def relay(name, sched=""):
    a = rrtest.Agent(name=name, relay="[127.0.0.1]:25", deadline="60s",
                     helo_name=name + ".test",
                     timeouts={"connect_timeout": "3s",
                               "helo_timeout": "6s"})
    a.write_conf(extra_text="\n[schedule]\n" + sched + FLEET)
    return a


SCHED = "failure_cohort = 2\ndown_time = 30s\n"
A, B = relay("relayA", SCHED), relay("relayB", SCHED)
qn = [0]


def run(agent, port, rcpt="r@dest.test"):
    qn[0] += 1
    return agent.run([rcpt], queue_id="87F%05X" % qn[0],
                     nexthop="[127.0.0.1]:%d" % port)


# --- 1. a dead mark for the fleet ---------------------------------------------------
bad = BadServer("421")
p421 = bad.start()
run(A, p421)
run(A, p421)
is_(bad.counts()[0], 2, "relay A: two connections, two 421 greetings")
r = run(B, p421)
like(r.out, r"^4\.4\.1 delivery temporarily suspended: host 127\.0\.0\.1"
     r"\[127\.0\.0\.1\] refused to talk to me: 421", "relay B: suspended by "
     "A's mark, with A's reason")
is_(bad.counts()[0], 2, "relay B made no connection")
p = subprocess.run([B.binary, "--destinations", "-c", B.conf],
                   capture_output=True, text=True)
like(p.stdout, r"127\.0\.0\.1:%d .*down for \d+s more: host" % p421,
     "--destinations on relay B shows the fleet's view")
bad.stop()

# --- 1b. a limit learned by one relay, used by the other ------------------------------
lim = SmtpSink({"hostname": "limit3.test", "rcpt_max": 3})
plim = lim.start()
rrtest.at_cleanup(lim.stop)
ra = A.run(["a%d@dest.test" % i for i in range(10)], queue_id="87LA",
           nexthop="[127.0.0.1]:%d" % plim)
is_(ra.rc, 0, "relay A: 10 recipients to a limit-3 server, delivered")
ok([l for l in A.log_lines() if "learned limit 3" in l], "relay A learned "
   "the limit 3")
conns_a = lim.connections()
rb = B.run(["b%d@dest.test" % i for i in range(10)], queue_id="87LB",
           nexthop="[127.0.0.1]:%d" % plim)
is_(rb.rc, 0, "relay B: 10 more, delivered")
b_conn = [e for e in lim.transcript() if e["conn"] > conns_a]
rcpts_per_tx, cur = [], 0
for e in b_conn:
    if e["dir"] == "c" and e["line"].upper().startswith("RCPT"):
        cur += 1
    elif e["dir"] == "c" and e["line"].upper().startswith("DATA"):
        rcpts_per_tx.append(cur)
        cur = 0
is_(rcpts_per_tx, [3, 3, 3, 1], "relay B's first session sends at most 3 "
    "RCPTs per transaction (the fleet's limit)")
is_([e["line"][:3] for e in b_conn if e["dir"] == "s"
     and e["line"].startswith("452")], [], "and none is refused")
ok([l for l in B.log_lines() if "limit 3 the fleet learned" in l],
   "relay B's log says where the limit came from")


# where each number comes from: -q and --destinations on both relays
def probe_conf(agent, port):
    """probe_conf - AGENT's configuration with relay = the server PORT
    (-q shows the route a delivery takes, here the static relay)"""
    text = rrtest.read_file(agent.conf).replace(
        "relay = [127.0.0.1]:25", "relay = [127.0.0.1]:%d" % port)
    return rrtest.write_file(agent.conf + ".probe", text)


ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
qb = subprocess.run([B.binary, "-q", "dest.test", "-c", probe_conf(B, plim)],
                    capture_output=True, text=True).stdout
like(qb, r"(?m)^      learned limit: 3 recipients, \d+s ago\n        from: "
     r"fleet, learned by relayA\.test at %s$" % ISO, "relay B's -q: the "
     "limit is the fleet's, learned by relay A (its name), when")
like(qb, r"(?m)^      state: sessions 0/\d+ \(cap \d+\), up\n        from: "
     r"fleet \(Redis: the sessions and marks of every relay\); cap: "
     r"\[schedule\] concurrency$", "relay B's -q: the sessions and marks "
     "are the fleet's, the cap [schedule]'s")
ok("from: local" not in qb, "relay B has no limit of its own")
qa = subprocess.run([A.binary, "-q", "dest.test", "-c", probe_conf(A, plim)],
                    capture_output=True, text=True).stdout
like(qa, r"(?m)^      learned limit: 3 recipients, \d+s ago\n        from: "
     r"local \(this host's delivery log\)\n      learned limit: 3 "
     r"recipients, \d+s ago \(not used: this host's own comes first\)\n"
     r"        from: fleet, learned by relayA\.test at %s$" % ISO,
     "relay A's -q: its own limit (local) used, the fleet's beside it")
qj = json.loads(subprocess.run([B.binary, "-q", "dest.test", "--json", "-c",
                                probe_conf(B, plim)], capture_output=True,
                               text=True).stdout)
srv = qj["groups"][0]["servers"][0]
lf = srv.get("learned_fleet") or {}
is_((srv.get("learned"), lf.get("rcpt_limit"), lf.get("by"), lf.get("used"),
     (srv.get("state") or {}).get("source")),
    (None, 3, "relayA.test", True, "fleet"), "relay B's -q --json: the same")
like(lf.get("time", ""), "^%s$" % ISO, "... and when, in ISO 8601")
p = subprocess.run([B.binary, "--destinations", "-c", B.conf],
                   capture_output=True, text=True)
like(p.stdout, r"(?m)^127\.0\.0\.1:%d 127\.0\.0\.1 \[fleet\] sessions 0/\d+ "
     r"\(cap \d+\), limit 3 learned by relayA\.test at %s, up$" % (plim, ISO),
     "relay B's --destinations: the fleet's numbers, who learned the limit, "
     "when")
rows = {r["server"]: r for r in json.loads(subprocess.run(
    [B.binary, "--destinations", "--json", "-c", B.conf],
    capture_output=True, text=True).stdout)}
row = rows.get("127.0.0.1:%d" % plim, {})
is_((row.get("source"), row.get("cap_from"),
     (row.get("fleet_learned") or {}).get("by")),
    ("fleet", "[schedule] concurrency", "relayA.test"),
    "--destinations --json: source, cap_from, fleet_learned")

# --- 2. a fleet-wide cap ---------------------------------------------------------------
CAP = "concurrency = 2\ninitial_concurrency = 2\nslot_wait = 20s\n" \
      "failure_cohort = 0\n"
A2, B2 = relay("relayA2", CAP), relay("relayB2", CAP)
tar = BadServer("tarpit")
ptar = tar.start()
out = []


def one(agent, i):
    out.append(run(agent, ptar, "c%d@dest.test" % i))


ts = [threading.Thread(target=one, args=(A2 if i % 2 else B2, i))
      for i in range(6)]
for t in ts:
    t.start()
for t in ts:
    t.join()
is_(tar.counts()[2], 2, "3 agents on each relay, fleet cap 2: at most 2 "
    "sessions on the tarpit at once")
is_(sorted(r.out[:5] for r in out), ["4.4.2"] * 2 + ["4.4.5"] * 4,
    "2 greeting timeouts, 4 deferred 4.4.5 (concurrency limit reached)")
tar.stop()

# --- 3. a dead relay's slot lapses -----------------------------------------------------------
ONE = "concurrency = 1\ninitial_concurrency = 1\nslot_wait = 1s\n" \
      "failure_cohort = 0\n"
A3, B3 = relay("relayA3", ONE), relay("relayB3", ONE)
tar = BadServer("tarpit")
ptar = tar.start()
pw = rrtest.ensure_user()
holder = subprocess.Popen(
    [A3.binary, "-c", A3.conf, "-i", "87KILL", "-n", "[127.0.0.1]:%d" % ptar,
     "-f", "s@src.test", "--", "k@dest.test"], stdin=subprocess.PIPE,
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=A3.env(),
    user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
holder.stdin.write(rrtest.sample_message("s@src.test", ["k@dest.test"])
                   .encode())
holder.stdin.close()
rrtest.wait_until(lambda: tar.counts()[1] == 1, 10, what="holder connected")
holder.send_signal(signal.SIGKILL)
holder.wait()
t_kill = time.monotonic()
r = run(B3, ptar)
like(r.out, r"^4\.4\.5 concurrency limit reached: 1 of 1", "at once after "
     "the kill: the lease still holds the slot for the fleet (4.4.5)")
time.sleep(max(0, 3.5 - (time.monotonic() - t_kill)))
before = tar.counts()[0]
r = run(B3, ptar)
is_(tar.counts()[0], before + 1, "after lease_time the slot is free: relay "
    "B connects")
tar.stop()

# --- 4. Redis away --------------------------------------------------------------------------------
good = SmtpSink({"hostname": "good.test"})
pgood = good.start()
rrtest.at_cleanup(good.stop)
redis.send_signal(signal.SIGSTOP)
t0 = time.monotonic()
r = run(A, pgood, "stalled@dest.test")
el = time.monotonic() - t0
redis.send_signal(signal.SIGCONT)
like(r.out, r"^2\.0\.0", "Redis paused: delivered (%.2fs)" % el)
ok(el < 3, "within the command timeout, not stuck (%.2fs)" % el)
ok([l for l in A.log_lines() if "fleet state:" in l and "own state" in l],
   "the log says the host's own state is used")
redis.kill()
redis.wait()
res = [run(B, pgood, "down%d@dest.test" % i) for i in range(5)]
is_([x.rc for x in res], [0] * 5, "Redis stopped: 5 more delivered")
is_(sorted(r for m in good.messages() for r in m["rcpts"]),
    sorted(["stalled@dest.test"] + ["down%d@dest.test" % i
                                    for i in range(5)]),
    "each exactly once")
is_(len([l for l in B.log_lines() if "fleet state:" in l]), 1,
    "relay B logged the trouble once")

# --- 5. the fallbacks counted in the delivery log ----------------------------------------
LOGCLI = os.path.join(os.path.dirname(rrtest.agent_binary()), "rapidretry-log")


def logcli(agent, *args):
    return subprocess.run([LOGCLI, "-c", agent.conf] + list(args),
                          capture_output=True, text=True)


like(logcli(A, "--stats").stdout, r"(?m)^fleet fallbacks: 1 \(timeout 1\), "
     r"the last at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: redis unix:",
     "relay A's --stats: one fallback, Redis paused: timeout")
like(logcli(B, "--stats").stdout, r"(?m)^fleet fallbacks: 1 \(refused 1\), ",
     "relay B's --stats: one fallback, Redis stopped: refused (the other "
     "runs obeyed the host's mark and did not try)")
prom = logcli(B, "--prometheus").stdout.splitlines()
ok("# TYPE rapidretry_fleet_fallbacks_total counter" in prom and
   'rapidretry_fleet_fallbacks_total{reason="refused"} 1' in prom and
   'rapidretry_fleet_fallbacks_total{reason="timeout"} 0' in prom,
   "relay B's --prometheus: the counter by reason: %r"
   % [l for l in prom if "fallbacks" in l])
st = json.loads(logcli(B, "--stats", "--json").stdout)["fleet_fallbacks"]
is_((st["total"], st["refused"], st["timeout"]), (1, 1, 0),
    "--stats --json: fleet_fallbacks")
ok("fleet fallbacks:" not in logcli(A2, "--stats").stdout,
   "a relay that never fell back shows no fallback line")

# Redis answering an error (here: the scripts not permitted; out of memory
# does the same to the scripts that write before anything else)
os.unlink(SOCK)
redis = redis_start()
C = relay("relayC", SCHED)
p = subprocess.run(["redis-cli", "-s", SOCK, "ACL", "SETUSER", "default",
                    "-evalsha"], capture_output=True, text=True)
is_(p.stdout.strip(), "OK", "EVALSHA refused by Redis's ACL")
r = run(C, pgood, "noperm@dest.test")
like(r.out, r"^2\.0\.0", "Redis answers errors: delivered")
like(logcli(C, "--stats").stdout, r"(?m)^fleet fallbacks: 1 \(error 1\), .*"
     r"NOPERM", "and counted as an error reply, with Redis's words")
done()
