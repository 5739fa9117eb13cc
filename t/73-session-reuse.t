#!/usr/bin/env python3
# 73-session-reuse.t - a connection kept open for the next group of a
# lane is reused only when it meets THAT group's TLS level, certificate
# names and SASL identity. unbound serves a.test (MX
# mx1), tlsmulti.test (MX mx1, mx2) and s.test (MX mx1); mx1 is a receiver
# Postfix with STARTTLS (a certificate from a CA the agent may or may not
# know) and SASL; mx2 is our scripted server without STARTTLS.
#  1. tlsmulti.test alone, [tls_policy] tlsmulti.test = verify, CA unknown:
#     deferred 4.7.5, nothing sent anywhere.
#  2. a.test (level may) then tlsmulti.test in one batch: a.test delivered
#     over the Untrusted session; tlsmulti.test NOT delivered over it but
#     deferred with the same status as when alone.
#  3. the same with the CA known: the session verifies for tlsmulti.test
#     too, so both go over ONE connection (the check costs nothing when
#     the policy is met).
#  4. a.test (no credentials) then s.test (credentials for its domain):
#     s.test's message goes over a second, authenticated connection.
import os
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
import dnsserver
from mxtest import (AddrReceiver, AddrSink, common_port, require_dns,
                    start_dns)
import tlsca

require_dns()
if not os.path.exists("/usr/sbin/saslpasswd2"):
    rrtest.skip_all("saslpasswd2 missing (Debian: sasl2-bin)")

ADDR1, ADDR2 = "127.0.0.2", "127.0.0.3"
USER, PASS, REALM = "reuseuser", "R3use-Pw-0815", "reuse.test"
ZONE = ["a MX 10 mx1.test.", "tlsmulti MX 10 mx1.test.",
        "tlsmulti MX 20 mx2.test.", "s MX 10 mx1.test.",
        "mx1 A " + ADDR1, "mx2 A " + ADDR2]

dns = start_dns(ZONE)
if dnsserver.query(dns.port, "tlsmulti.test") != 0:
    rrtest.bail("unbound: tlsmulti.test does not resolve")

PORT = common_port([ADDR1, ADDR2])
ca = tlsca.CA("reuse")
cert, key = ca.server("mx1", ["mx1.test"])
main = tlsca.smtpd_tls(cert, key)
main.update(tlsca.smtpd_sasl("reuse-mx1", REALM, USER, PASS))
main.update({"smtpd_relay_restrictions":
             "permit_sasl_authenticated, reject_unauth_destination",
             "smtpd_recipient_restrictions": "permit",
             "smtpd_sasl_authenticated_header": "yes"})
mx1 = AddrReceiver("reuse-mx1", ADDR1, PORT,
                   domains=["a.test", "tlsmulti.test", "s.test"], main=main,
                   master_extra=tlsca.TLSMGR).start()
mx2 = AddrSink(ADDR2, PORT, {"hostname": "mx2.test"})
mx2.start()

ROUTE = "lookup-mx:query=127.0.0.1:%d;port=%d" % (dns.port, PORT)
agent = rrtest.Agent(name="reuse-agent", relay="", deadline="30s")
pwfile = os.path.join(agent.dir, "sasl_passwd")
rrtest.write_file(pwfile, "s.test %s:%s\n" % (USER, PASS), mode=0o600,
                  owner=rrtest.TEST_USER)
_qid = [0x73000]


def run(rcpts, extra):
    """run - one agent run, routes by MX; (result, qid, log lines)"""
    _qid[0] += 1
    qid = "%X" % _qid[0]
    agent.write_conf(extra_text="\n[routes]\n* = %s\n%s" % (ROUTE, extra))
    before = len(agent.log_lines())
    res = agent.run(rcpts, queue_id=qid, nexthop="batch")
    ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty" % qid)
    return res, qid, agent.log_lines()[before:]


def statuses(lines, qid):
    return {r: (d, s, t) for q, r, d, s, t in rrtest.agent_status(lines)
            if q == qid}


def settle(mark):
    """settle - every connection to mx1 since MARK has ended"""
    rrtest.wait_until(lambda: len(mx1.sessions(mark))
                      >= mx1.connections(mark), 10, what="mx1 disconnect")


VERIFY = "\n[tls_policy]\ntlsmulti.test = verify\n"

# --- 1. tlsmulti.test alone: verify fails at mx1 and mx2 -------------------
mark = mx1.mark()
res, qid, lines = run(["m1@tlsmulti.test"], VERIFY)
settle(mark)
alone = statuses(lines, qid).get("m1@tlsmulti.test", ("", "", ""))
good = is_(res.rc, 75, "alone: tlsmulti.test deferred (75)")
good &= like(alone[0], r"^4\.7\.5$", "alone: dsn 4.7.5")
good &= is_(mx1.delivered(), [], "alone: nothing delivered at mx1")
good &= is_(mx2.commands("MAIL"), [], "alone: no MAIL at mx2")
if not good:
    diag("\n".join(lines))

# --- 2. a.test (may) then tlsmulti.test (verify) in one batch --------------
mark = mx1.mark()
res, qid, lines = run(["u1@a.test", "u2@tlsmulti.test"], VERIFY)
settle(mark)
st = statuses(lines, qid)
good = is_(res.rc, 75, "batch: exit 75 (tlsmulti.test deferred)")
good &= is_(st.get("u1@a.test", ("",))[1:2], ("sent",),
            "batch: a.test sent over the may session")
good &= is_(st.get("u2@tlsmulti.test", ("", ""))[:2], (alone[0], "deferred"),
            "batch: tlsmulti.test deferred with the same dsn as alone")
good &= like(res.out, r"^4\.7\.5 ", "batch: the status line says 4.7.5")
good &= is_(mx1.wait_delivered(1), ["u1@a.test"],
            "batch: only a.test's recipient arrived at mx1")
good &= is_(mx2.commands("MAIL"), [], "batch: no MAIL at mx2")
good &= ok([l for l in lines if re.search(
    r"%s: not reusing the connection to mx1\.test\[%s\]:%d for .*: server "
    r"certificate not verified" % (qid, re.escape(ADDR1), PORT), l)],
    "batch: the agent logs why the kept connection was not reused")
if not good:
    diag("\n".join(lines))

# --- 3. the CA known: the kept session verifies, one connection ---------
mark = mx1.mark()
n_before = len(mx1.delivered())
res, qid, lines = run(["u3@a.test", "u4@tlsmulti.test"],
                      "\n[tls]\nca_file = %s\n" % ca.cert + VERIFY)
settle(mark)
st = statuses(lines, qid)
good = is_(res.rc, 0, "CA known: exit 0")
good &= is_(sorted(r for r, v in st.items() if v[1] == "sent"),
            ["u3@a.test", "u4@tlsmulti.test"], "CA known: both sent")
good &= is_(mx1.connections(mark), 1,
            "CA known: one connection for both groups")
good &= is_(len(mx1.wait_delivered(n_before + 2)), n_before + 2,
            "CA known: both arrived at mx1")
if not good:
    diag("\n".join(lines))

# --- 4. SASL: a.test without credentials, s.test with them -------------
mark = mx1.mark()
n_before = len(mx1.delivered())
res, qid, lines = run(["u5@a.test", "u6@s.test"],
                      "\n[sasl]\npassword_file = %s\n" % pwfile)
settle(mark)
st = statuses(lines, qid)
good = is_(res.rc, 0, "SASL: exit 0")
good &= is_(sorted(r for r, v in st.items() if v[1] == "sent"),
            ["u5@a.test", "u6@s.test"], "SASL: both sent")
good &= is_(mx1.connections(mark), 2,
            "SASL: a second connection for the other identity")
good &= ok(mx1.wait_log(r"sasl_method=PLAIN, sasl_username=%s" % USER,
                        since=mark, timeout=10),
           "SASL: the second connection authenticated")
mx1.wait_delivered(n_before + 2)
auth = {}
for _, text in mx1.messages():
    head = text.split("\n\n", 1)[0]
    m = re.search(r"^Delivered-To: *(\S+)", head, re.M)
    if m and m.group(1) in ("u5@a.test", "u6@s.test"):
        auth[m.group(1)] = "Authenticated sender: %s" % USER in head
good &= is_(auth, {"u5@a.test": False, "u6@s.test": True},
            "SASL: only s.test's message came over the authenticated "
            "connection")
good &= ok([l for l in lines if re.search(
    r"%s: not reusing the connection .*: another SASL identity" % qid, l)],
    "SASL: the agent logs why")
if not good:
    diag("\n".join(lines))
    diag("\n".join(mx1.log_lines(mark)[-30:]))
done()
