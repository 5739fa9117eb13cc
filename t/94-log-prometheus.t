#!/usr/bin/env python3
# 94-log-prometheus.t - rapidretry-log --stats --prometheus: the delivery
# log's numbers in Prometheus' text exposition format (node_exporter's
# textfile collector): recipients by status, transactions, connections
# and rapid retries per relay, learned limits; each checked against what
# the scripted server saw.
import os
import re
import subprocess
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()
LOG = os.path.join(rrtest.build_dir(), "agent", "rapidretry-log")
if not os.access(LOG, os.X_OK):
    rrtest.skip_all("rapidretry-log not built")

# limit 3; b2@ is greylisted (deferred), b3@ unknown (bounced)
sink = SmtpSink({"rcpt_max": 3, "rules": [
    {"cmd": "RCPT", "addr": "b2@d1.test", "reply": "450 4.2.0 greylisted"},
    {"cmd": "RCPT", "addr": "b3@d1.test", "reply": "550 5.1.1 no such user"},
]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
agent = rrtest.Agent(relay="[127.0.0.1]:%d" % port)
DB = agent.journal[:-3] + "-log.db"

r1 = agent.run(["a%d@d1.test" % i for i in range(1, 8)], queue_id="M1")
is_(r1.rc, 0, "run 1: 7 recipients, limit 3: exit 0")
r2 = agent.run(["b1@d1.test", "b2@d1.test", "b3@d1.test"], queue_id="M2")
is_(r2.rc, 75, "run 2: one sent, one deferred, one bounced: exit 75")


def prom(*args):
    p = subprocess.run([LOG, "-d", DB, "--stats", "--prometheus"]
                       + list(args), capture_output=True, text=True)
    return p


p = prom()
is_(p.returncode, 0, "exit 0")
is_(p.stderr, "", "nothing on stderr")
text = p.stdout


def parse(text):
    """parse - {(name, labels): value}, and the format checked line by
    line: HELP/TYPE before the samples of a family, a known type, sample
    syntax of the text exposition format"""
    samples, typed, bad = {}, {}, []
    for line in text.splitlines():
        m = re.match(r"# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$", line)
        if m:
            if m.group(1) == "TYPE":
                typed[m.group(2)] = m.group(3)
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_]\w*="(?:'
                     r'[^"\\\n]|\\.)*",?)*)\})? (-?\d+(?:\.\d+)?)$', line)
        if not m or m.group(1) not in typed:
            bad.append(line)
            continue
        samples[(m.group(1), m.group(3) or "")] = float(m.group(4))
    return samples, typed, bad


s, typed, bad = parse(text)
is_(bad, [], "every line is valid exposition format after its TYPE")
ok(typed and {t for n, t in typed.items()
              if n != "rapidretry_fleet_fallbacks_total"} == {"gauge"},
   "gauges (the log prunes old rows: never a counter that goes down)")
is_(typed.get("rapidretry_fleet_fallbacks_total"), "counter",
    "the fleet's fallbacks: a counter (kept apart from the rows, never "
    "pruned)")
is_([l for l in text.splitlines()
     if l.startswith("rapidretry_fleet_fallbacks_total")],
    ['rapidretry_fleet_fallbacks_total{reason="%s"} 0' % r for r in
     ("refused", "timeout", "error", "garbage", "closed")],
    "no fallbacks: every reason present, as 0")
relay = [l for (n, l) in s if n == "rapidretry_transactions"]
is_(len(relay), 1, "one relay")
rl = relay[0] if relay else ""
like(rl, r'^relay="[^"]*\[127\.0\.0\.1\]:%d"$' % port, "its label: %s" % rl)
# what crossed the wire
txns = sink.transactions()
conns = sink.connections()
diag("sink: %d connections, %d transactions" % (conns, len(txns)))
is_(s.get(("rapidretry_recipients", 'status="sent"')), 8.0,
    "sent: 7 + 1")
is_(s.get(("rapidretry_recipients", 'status="deferred"')), 1.0,
    "deferred: 1")
is_(s.get(("rapidretry_recipients", 'status="bounced"')), 1.0,
    "bounced: 1")
is_(s.get(("rapidretry_connections", rl)), float(conns),
    "connections = what the server saw (%d)" % conns)
is_(s.get(("rapidretry_transactions", rl)), float(len(txns)),
    "transactions = the MAIL transactions the server saw (%d)" % len(txns))
is_(s.get(("rapidretry_rapid_retries", rl)), float(len(txns) - conns),
    "rapid retries = transactions beyond the first per connection")
srv = 'server="127.0.0.1:%d"' % port
is_(s.get(("rapidretry_learned_rcpt_limit", srv)), 3.0, "learned limit 3")
is_(s.get(("rapidretry_learned_one_domain", srv)), 0.0, "not one-domain")
age = s.get(("rapidretry_learned_limit_age_seconds", srv), -1)
ok(0 <= age < 120, "the limit's age in seconds (%s)" % age)

# filters apply; statuses never vanish
p = prom("-q", "M1")
s2, _, bad2 = parse(p.stdout)
is_((p.returncode, bad2), (0, []), "-q M1: valid")
is_([s2.get(("rapidretry_recipients", 'status="%s"' % x)) for x in
     ("sent", "deferred", "bounced")], [7.0, 0.0, 0.0],
    "-q M1: 7 sent, and the other statuses as 0")
p = prom("--since", "2000-01-01", "--until", "2000-01-02")
s3, _, _ = parse(p.stdout)
is_((p.returncode, s3.get(("rapidretry_recipients", 'status="sent"'))),
    (0, 0.0), "no matching rows: exit 0, zeros (a cron job does not fail)")

# a hostile relay name stays one valid label
import sqlite3
db = sqlite3.connect(DB)
db.execute("UPDATE attempts SET relay = ? WHERE queue_id = 'M2'",
           ('evil"\\\nname[1.2.3.4]:25',))
db.commit()
db.close()
s4, _, bad4 = parse(prom().stdout)
is_(bad4, [], "a relay name with quote, backslash, newline: still valid")
ok(("rapidretry_transactions", r'relay="evil\"\\\nname[1.2.3.4]:25"') in s4,
   "... escaped as the format says")

# a hostile limit: learned at time -2^63 (now minus it overflowed)
db = sqlite3.connect(DB)
db.execute("INSERT INTO limits (server, rcpt_limit, one_domain, time)"
           " VALUES ('h[1.2.3.4]:25', 5, 0, ?)", (-2 ** 63,))
db.commit()
db.close()
p5 = prom()
s5, _, bad5 = parse(p5.stdout)
is_((p5.returncode, p5.stderr, bad5), (0, "", []),
    "a limit learned at time -2^63: exit 0, nothing on stderr, valid")
age5 = s5.get(("rapidretry_learned_limit_age_seconds",
               'server="h[1.2.3.4]:25"'), -1)
ok(age5 > 1.7e9, "... its age counts from 1970 (%s)" % age5)

# the fleet's fallbacks as the agent counts them (t/87 makes real ones)
db = sqlite3.connect(DB)
db.execute("INSERT INTO fleet_fallbacks (reason, count, time, text)"
           " VALUES ('timeout', 2, 1796630000, 'redis unix:/x: timed out'),"
           " ('refused', 1, 1796630100, 'redis unix:/x: refused')")
db.commit()
db.close()
p6 = prom()
lines6 = p6.stdout.splitlines()
ok('rapidretry_fleet_fallbacks_total{reason="timeout"} 2' in lines6 and
   'rapidretry_fleet_fallbacks_total{reason="refused"} 1' in lines6 and
   'rapidretry_fleet_fallbacks_total{reason="error"} 0' in lines6,
   "the counter by reason, exact lines")
p7 = subprocess.run([LOG, "-d", DB, "--stats"], capture_output=True,
                    text=True)
like(p7.stdout, r"(?m)^fleet fallbacks: 3 \(timeout 2, refused 1\), the "
     r"last at 2026-12-07T07:55:00Z: redis unix:/x: refused$",
     "--stats: the fallbacks, the most frequent reason first, the last one's "
     "time and words")
done()
