#!/usr/bin/env python3
# 93-agent-probe.t - rapidretry-agent -q DOMAIN... [--json]: without
# sending mail, what a delivery would do: the route, MX hosts and
# addresses in order (loopback unbound), the groups the domains share,
# TLS level and names, SASL, and the recipient limit a real earlier run
# learned (delivery log) with its age.
import glob
import json
import os
import re
import shutil
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
import mxtest
from smtpsink import SmtpSink

mxtest.require_dns()

dns = mxtest.start_dns()
sink = SmtpSink({"rcpt_max": 3})
sport = sink.start()
rrtest.at_cleanup(sink.stop)
agent = rrtest.Agent(relay="[127.0.0.1]:%d" % sport)

# a real run learns the sink's limit (3) into the delivery log
res = agent.run(["r%d@limited.test" % i for i in range(1, 6)],
                queue_id="P1")
is_(res.rc, 0, "an earlier delivery to the limit-3 server")
conns = sink.connections()

pw = rrtest.write_file(os.path.join(agent.dir, "pw"),
                       "[127.0.0.1]:%d probeuser:secret\n" % sport,
                       mode=0o600, owner=rrtest.TEST_USER)
MXPORT = 2525
agent.write_conf(relay="", extra_text=(
    "[dns]\nservers = 127.0.0.1:%d\ntimeout = 1s\n"
    "[sasl]\npassword_file = %s\n"
    "[tls_policy]\nshared-a.test = verify\n"
    "[routes]\nlimited.test = relay:[127.0.0.1]:%d\n"
    "* = lookup-mx:query=127.0.0.1:%d;port=%d\n"
    % (dns.port, pw, sport, dns.port, MXPORT)))
DOMAINS = ["shared-a.test", "SHARED-B.test", "twopref.test", "nullmx.test",
           "nonexistent.test", "limited.test"]


def probe(*args):
    """probe - -q as the agent's user, as an administrator would"""
    argv = [agent.binary, "-q", "-c", agent.conf] + list(args)
    return rrtest.run_as_user(argv, b"", agent.env())


r = probe("--json", *DOMAINS)
is_(r.rc, 0, "-q --json: exit 0")
try:
    j = json.loads(r.out)
except ValueError:
    j = {"domains": [], "groups": []}
    diag(r.out + r.err)
dom = {d["domain"]: d for d in j["domains"]}
is_([d["domain"] for d in j["domains"]],
    [d.lower() for d in DOMAINS], "one entry per domain, in order")
is_(dom["shared-a.test"]["group"], dom["shared-b.test"]["group"],
    "shared-a and shared-b (one MX) share a group")
ok(dom["twopref.test"]["group"] not in (None, dom["shared-a.test"]["group"]),
   "twopref has a group of its own")
is_((dom["nullmx.test"]["dsn"], dom["nullmx.test"]["group"]),
    ("5.1.10", None), "null MX: 5.1.10, no group")
is_((dom["nonexistent.test"]["dsn"], dom["nonexistent.test"]["group"]),
    ("5.1.2", None), "NXDOMAIN: 5.1.2, no group")
like(dom["twopref.test"]["route"], r"^lookup-mx:query=127\.0\.0\.1:%d"
     % dns.port, "the route rule that matched (*)")
is_(dom["limited.test"]["route"], "relay:[127.0.0.1]:%d" % sport,
    "the route rule that matched (limited.test)")
# the [routes] lines in the agent's file: after [agent], [smtp], [dsn]
lines = rrtest.read_file(agent.conf).splitlines()
is_([(dom[d]["rule"]["pattern"], dom[d]["rule"]["line"])
     for d in ("limited.test", "twopref.test")],
    [("limited.test", lines.index("limited.test = relay:[127.0.0.1]:%d"
                                  % sport) + 1),
     ("*", [i for i, l in enumerate(lines) if l.startswith("* = ")][0]
      + 1)], "which [routes] line matched, with its line number")
grp = {g["group"]: g for g in j["groups"]}
g1 = grp.get(dom["shared-a.test"]["group"], {"servers": [], "domains": []})
is_(g1["domains"], ["shared-a.test", "shared-b.test"], "group 1's domains")
is_([(s["host"], s["address"], s["port"]) for s in g1["servers"]],
    [("mx-shared.test", "127.0.0.2", MXPORT)], "group 1's server")
is_([(s["tls_level"], s["tls_names"]) for s in g1["servers"]],
    [("verify", ["mx-shared.test"])],
    "[tls_policy] shared-a.test = verify covers the group; names: the MX")
g2 = grp.get(dom["twopref.test"]["group"], {"servers": []})
is_([(s["host"], s["address"]) for s in g2["servers"]],
    [("mx-refuse.test", "127.0.0.3"), ("mx-good.test", "127.0.0.4")],
    "twopref: MX 10 before MX 20")
is_([s["tls_level"] for s in g2["servers"]], ["may", "may"],
    "twopref: the default TLS level")
is_([s["sasl_user"] for s in g2["servers"]], [None, None], "twopref: no SASL")
g3 = grp.get(dom["limited.test"]["group"], {"servers": [{}]})
s3 = g3["servers"][0]
is_(s3.get("sasl_user"), "probeuser", "limited.test: SASL applies (user)")
l3 = s3.get("learned") or {}
is_((l3.get("rcpt_limit"), l3.get("one_domain"), l3.get("used")),
    (3, False, True), "limited.test: the learned limit 3, in use")
ok(0 <= l3.get("age", -1) < 120, "... with its age (%s s)" % l3.get("age"))

r = probe(*DOMAINS)
is_(r.rc, 0, "-q (text): exit 0")
like(r.out, r"(?m)^shared-a\.test: route lookup-mx:.* \(\[routes\] \*, "
     r"line \d+\), group 1$", "text: the domain's route, rule and group")
like(r.out, r"(?ms)^group 1: shared-a\.test shared-b\.test .*?"
     r"mx-shared\.test\[127\.0\.0\.2\]:%d\n\s+tls: verify \(names: "
     r"mx-shared\.test\)" % MXPORT, "text: group, server, TLS")
like(r.out, r"(?m)learned limit: 3 recipients, \d+s ago$",
     "text: the learned limit with its age")
like(r.out, r"(?m)^nullmx\.test: .*no delivery: 5\.1\.10 ",
     "text: why a domain gets no delivery")
is_(sink.connections(), conns, "no connection was made: no mail sent")

# a hostile delivery log: the limit learned at time -2^63 (now minus it
# overflowed); it is too old to use, and its age counts from 1970
import sqlite3
DB = agent.journal[:-3] + "-log.db"
db = sqlite3.connect(DB)
db.execute("UPDATE limits SET time = ?", (-2 ** 63,))
db.commit()
db.close()
for f in glob.glob(DB + "*"):
    shutil.chown(f, rrtest.TEST_USER)
r = probe("--json", "limited.test")
j = json.loads(r.out) if r.rc == 0 else {"groups": []}
l4 = ([g["servers"][0].get("learned") for g in j["groups"]] or [None])[0]
l4 = l4 or {}
is_((r.rc, r.err, l4.get("rcpt_limit"), l4.get("used")),
    (0, "", 3, False), "a limit learned at time -2^63: shown, not in use")
ok(l4.get("age", 0) > 1.7e9, "... its age counts from 1970 (%s)"
   % l4.get("age"))

# the static relay of [agent] puts every domain in one group
agent.write_conf(relay="[127.0.0.1]:%d" % sport)
r = probe("--json", "a.test", "b.test")
j = json.loads(r.out) if r.rc == 0 else {"domains": []}
is_([d["group"] for d in j["domains"]], [1, 1],
    "[agent] relay: one group for all")
r = probe()
is_(r.rc, 64, "no domain: usage error 64")
agent.write_conf(extra_text="[routes]\nx.test = bogus:thing\n")
r = probe("x.test")
is_(r.rc, 78, "a bad route: exit 78")
like(r.err, r"rapidretry\.conf:\d+: ", "... with FILE:LINE")
done()
