#!/usr/bin/env python3
# 61-agent-mx-bad.t - rapidretry-agent run directly (as pipe(8) does,
# nexthop "batch") with per-domain MX routing and bad input: malformed
# [routes] and [dns] lines, a DNS server that is down, answers with
# garbage, a server that never answers, an MX pointing to a CNAME, a
# domain with 100 MX records, null MX, NXDOMAIN, MX hosts without address,
# and a mixed batch. Each run: the exact exit code and status at byte 0,
# nothing on stderr, one log line per recipient, nothing lost (bad
# configuration and DNS trouble defer, only the recipient's own DNS
# answers bounce), and only the right server contacted.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
import dnsserver
from mxtest import AddrSink, common_port, require_dns, start_dns

require_dns()

# the shared test zone: mx-good.test (127.0.0.4) is the one server that
# works; cname.test's MX is a CNAME to it; big.test has 100 MX hosts on
# 127.0.1.1-100 where nobody listens
dns = start_dns()
fakes = {}
for mode in ("garbage", "badanswer", "drop"):
    fakes[mode] = dnsserver.FakeDns(mode)
    rrtest.at_cleanup(fakes[mode].stop)
DEAD_DNS = dnsserver.free_port()

PORT = common_port(["127.0.0.4", "127.0.1.1", "127.0.1.2"])
good = AddrSink("127.0.0.4", PORT, {"hostname": "mx-good.test"})
good.start()
agent = rrtest.Agent(relay="", deadline="20s")
qn = [0]


def run(rcpts, route=None, dns_lines=(), routes_text=None, nexthop="batch"):
    """run - one agent run with * = ROUTE (lookup-mx via unbound on PORT
    unless given) or a literal [routes] text; returns (Result, its log)."""
    if routes_text is None:
        routes_text = "* = %s\n" % (route or "lookup-mx:query=127.0.0.1:%d;"
                                    "port=%d" % (dns.port, PORT))
    agent.write_conf(extra_text="\n[dns]\ntimeout = 1s\n%s\n[routes]\n%s"
                     % ("".join(l + "\n" for l in dns_lines), routes_text))
    qn[0] += 1
    qid = "6B%08X" % qn[0]
    mark = len(agent.log_lines())
    res = agent.run(rcpts, queue_id=qid, nexthop=nexthop)
    return res, [l for l in agent.log_lines()[mark:] if qid in l]


def check(name, res, rc, status_re, log, rcpts, want_status):
    """check - exit code, one status line at byte 0, empty stderr, one
    agent log line per recipient with WANT_STATUS {rcpt: (dsn_re,
    status)}."""
    r = is_(res.rc, rc, "%s: exit %d" % (name, rc))
    r &= like(res.out, status_re, "%s: status at byte 0" % name)
    r &= ok(rrtest.status_line_ok(res),
            "%s: one stdout line, stderr empty" % name)
    st = rrtest.agent_status(log)
    got = {rr.lower(): (d, s) for q, rr, d, s, t in st}
    r &= is_(len(st), len(rcpts), "%s: one log line per recipient" % name)
    for rc_ in rcpts:
        dsn_re, status = want_status[rc_]
        d, s = got.get(rc_, ("", ""))
        r &= ok(re.match(dsn_re, d) and s == status,
                "%s: %s %s %s" % (name, rc_, status, dsn_re))
    if not r:
        diag(repr(res))
        diag("\n".join(log))
    return r


def conf_line(text):
    """conf_line - the line number of TEXT in the agent's config."""
    lines = rrtest.read_file(agent.conf).splitlines()
    return lines.index(text) + 1


R1 = ["u1@cname.test"]
DEFER = {r: (r"4\.", "deferred") for r in R1}

# --- malformed configuration: 4.3.5, names FILE:LINE, nothing contacted -----
for name, text, why in (
        ("bad domain pattern", "bad..domain = lookup-mx", "bad domain"),
        ("unknown route", "cname.test = smtp:[127.0.0.4]", "unknown route"),
        ("bad query= address", "* = lookup-mx:query=300.1.1.1:53",
         "bad DNS server address"),
        ("bad port=", "* = lookup-mx:port=0", "bad port"),
        ("relay without brackets", "* = relay:127.0.0.4:25",
         "need brackets")):
    res, log = run(R1, routes_text=text + "\n")
    check(name, res, 75, r"^4\.3\.5 ", log, R1,
          {r: (r"4\.3\.5", "deferred") for r in R1})
    like(res.out, r"%s:%d: \[routes\] .*%s" % (re.escape(agent.conf),
                                               conf_line(text), why),
         "%s: the status names FILE:LINE and why" % name)
res, log = run(R1, dns_lines=["servers = 127.0.0.1:53,ns1.example"])
check("bad [dns] servers", res, 75, r"^4\.3\.5 .*\[dns\] servers", log, R1,
      {r: (r"4\.3\.5", "deferred") for r in R1})
is_(good.connections(), 0, "no configuration error contacted a server")

# --- DNS trouble: 4.4.3 defer, before the deadline ---------------------------
for name, server in (("DNS server down", "127.0.0.1:%d" % DEAD_DNS),
                     ("garbage answers", "127.0.0.1:%d"
                      % fakes["garbage"].port),
                     ("broken answer section", "127.0.0.1:%d"
                      % fakes["badanswer"].port),
                     ("DNS server never answers", "127.0.0.1:%d"
                      % fakes["drop"].port)):
    res, log = run(R1, route="lookup-mx:query=%s;port=%d" % (server, PORT))
    check(name, res, 75, r"^4\.4\.3 ", log, R1,
          {r: (r"4\.4\.3", "deferred") for r in R1})
    ok(res.elapsed < 10, "%s: deferred in %.1fs" % (name, res.elapsed))
is_(good.connections(), 0, "no DNS failure contacted a server")
for mode, f in sorted(fakes.items()):
    ok(f.queries > 0, "the %s server was asked (%d queries)"
       % (mode, f.queries))

# --- answers -----------------------------------------------------------
res, log = run(R1)
check("MX pointing to a CNAME", res, 0, r"^2\.0\.0 ", log, R1,
      {r: (r"2\.0\.0", "sent") for r in R1})
is_(good.delivered(), R1, "MX -> CNAME: delivered to the CNAME's target")
like("\n".join(log), r"relay=mx-alias\.test\[127\.0\.0\.4\]:%d" % PORT,
     "MX -> CNAME: relay= names the MX host and the port of the route")

RB = ["u1@big.test", "u2@big.test"]
res, log = run(RB)
check("100 MX records", res, 75, r"^4\.4\.1 .*Connection refused", log, RB,
      {r: (r"4\.4\.1", "deferred") for r in RB})
refused = [l for l in log if re.search(
    r"\]: \w+: connect to mx-big-\d+\.test\[127\.0\.1\.\d+\]:%d: "
    r"Connection refused" % PORT, l)]
is_(len(refused), 5, "100 MX records: 5 addresses tried "
    "(mx_address_limit = 5)")
ok(res.elapsed < 10, "100 MX records: done in %.1fs" % res.elapsed)

cases = [
    ("null MX", ["u1@nullmx.test"], 69, r"^5\.1\.10 ",
     {"u1@nullmx.test": (r"5\.1\.10", "bounced")}),
    ("NXDOMAIN", ["u1@nxdomain.test", "u2@nxdomain.test"], 69, r"^5\.1\.2 ",
     {"u1@nxdomain.test": (r"5\.1\.2", "bounced"),
      "u2@nxdomain.test": (r"5\.1\.2", "bounced")}),
    ("MX host without address", ["u1@noaddr.test"], 75, r"^4\.4\.3 ",
     {"u1@noaddr.test": (r"4\.4\.3", "deferred")}),
    ("SERVFAIL", ["u1@x.broken"], 75, r"^4\.4\.3 ",
     {"u1@x.broken": (r"4\.4\.3", "deferred")}),
]
n = len(good.messages())
for name, rcpts, rc, status_re, want in cases:
    res, log = run(rcpts)
    check(name, res, rc, status_re, log, rcpts, want)
is_(len(good.messages()), n, "failed lookups: nothing delivered")

# --- one mixed batch: every domain routed on its own -------------------------
RM = ["m1@cname.test", "m2@noaddr2.test", "m3@nullmx.test",
      "m4@nxdomain.test", "m5@x.broken", "m6@relayed.test"]
conns = good.connections()
res, log = run(RM, routes_text="relayed.test = relay:[127.0.0.4]:%d\n"
               "* = lookup-mx:query=127.0.0.1:%d;port=%d\n"
               % (PORT, dns.port, PORT))
check("mixed batch", res, 75, r"^4\.4\.3 ", log, RM,
      {"m1@cname.test": (r"2\.0\.0", "sent"),
       "m2@noaddr2.test": (r"2\.0\.0", "sent"),
       "m3@nullmx.test": (r"5\.1\.10", "bounced"),
       "m4@nxdomain.test": (r"5\.1\.2", "bounced"),
       "m5@x.broken": (r"4\.4\.3", "deferred"),
       "m6@relayed.test": (r"2\.0\.0", "sent")})
last = good.messages()[-1]
is_(sorted(last["rcpts"]), ["m1@cname.test", "m2@noaddr2.test",
                            "m6@relayed.test"],
    "mixed batch: two MX domains and a relay route that end at the same "
    "server share one transaction")
is_(good.connections() - conns, 1, "mixed batch: one connection")

# --- the example config's [routes], uncommented, is valid -------------------
example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "etc", "rapidretry.conf.example")
text, section, routes = [], None, 0
for line in rrtest.read_file(example).splitlines():
    if line.startswith("["):
        section = line
    elif section == "[routes]" and re.match(r"#[*.\w][^ ]* = ", line):
        line = line[1:]
        routes += 1
    elif line.startswith("journal = "):
        line = "journal = " + agent.journal
    elif line.startswith("#log_file = "):
        line = "log_file = " + agent.log_file
    text.append(line)
ex = rrtest.write_file(os.path.join(agent.dir, "example.conf"),
                       "\n".join(text) + "\n", owner=rrtest.TEST_USER)
ok(routes >= 5, "the example has %d [routes] lines" % routes)
n = len(good.messages())
res = agent.run(["u1@client-a.example"], conf=ex, queue_id="6BEEEE01",
                nexthop="[127.0.0.4]:%d" % PORT)
is_((res.rc, res.out[:6]), (0, "2.0.0 "),
    "the example config with its routes uncommented is valid "
    "(delivered through a static nexthop)")
is_(len(good.messages()), n + 1, "example config: one message delivered")
if res.rc != 0:
    diag(repr(res))
# --- a nexthop host name without brackets: the MX of that host, as in
# Postfix (transport_maps "rapidretry:mx-good.test:PORT"); the recipient
# domains are not looked up at all ------------------------------------------
RN = ["n1@not-in-dns.example", "n2@other.example"]
res, log = run(RN, dns_lines=["servers = 127.0.0.1:%d" % dns.port],
               routes_text="* = lookup-mx:query=127.0.0.1:%d" % DEAD_DNS,
               nexthop="mx-good.test:%d" % PORT)
check("nexthop host", res, 0, r"^2\.0\.0 ", log, RN,
      {r: (r"2\.", "sent") for r in RN})
like("\n".join(log), r"relay=mx-good\.test\[127\.0\.0\.4\]:%d" % PORT,
     "nexthop host: delivered to mx-good.test's address")
ok(set(RN) <= set(good.delivered()), "nexthop host: the sink accepted both")

done()
