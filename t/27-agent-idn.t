#!/usr/bin/env python3
# 27-agent-idn.t - internationalised domains: a UTF-8
# domain with an ASCII local part needs no SMTPUTF8 (RFC 6531 §3.2); it
# is routed and sent as its A-label, mapped as IDNA2008 / UTS #46 does
# ("ß" stays "ß": faß.test is xn--fa-hia.test, never fass.test). The
# sender's domain too. A UTF-8 local part still needs SMTPUTF8 (5.6.7
# without it). Real DNS (unbound) for the MX lookups, the scripted server
# for what crossed the wire.
import os
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from mxtest import AddrSink, common_port, require_dns, start_dns

require_dns()

# bücher.test and faß.test share mx-idn (no SMTPUTF8); fass.test, the
# IDNA2003 reading of faß.test, has its own server that must stay idle;
# müller.test's server offers SMTPUTF8
dns = start_dns([
    "xn--bcher-kva MX 10 mx-idn.test.",
    "xn--fa-hia MX 10 mx-idn.test.",
    "mx-idn A 127.0.0.31",
    "fass MX 10 mx-fass.test.",
    "mx-fass A 127.0.0.32",
    "xn--mller-kva MX 10 mx-utf8.test.",
    "mx-utf8 A 127.0.0.33",
])
PORT = common_port(["127.0.0.31", "127.0.0.32", "127.0.0.33"])
plain = AddrSink("127.0.0.31", PORT, {"hostname": "mx-idn.test",
                                      "ehlo": ["PIPELINING",
                                               "ENHANCEDSTATUSCODES"]})
plain.start()
fass = AddrSink("127.0.0.32", PORT, {"hostname": "mx-fass.test"})
fass.start()
utf8 = AddrSink("127.0.0.33", PORT, {"hostname": "mx-utf8.test",
                                     "ehlo": ["PIPELINING", "SMTPUTF8",
                                              "8BITMIME",
                                              "ENHANCEDSTATUSCODES"]})
utf8.start()

agent = rrtest.Agent(relay="", deadline="20s")
agent.write_conf(extra_text="\n[dns]\ntimeout = 1s\n\n[routes]\n"
                 "* = lookup-mx:query=127.0.0.1:%d;port=%d\n"
                 % (dns.port, PORT))
qn = [0]


def run(rcpts, sender, nexthop="batch"):
    """run - one agent run: (result, its log lines)."""
    qn[0] += 1
    qid = "27ID%04X" % qn[0]
    mark = len(agent.log_lines())
    res = agent.run(rcpts, sender=sender, queue_id=qid, nexthop=nexthop)
    ok(rrtest.status_line_ok(res), "%s: one stdout line, stderr empty" % qid)
    return res, [l for l in agent.log_lines()[mark:] if qid in l]


def status(log, rcpt):
    st = [s for s in rrtest.agent_status(log) if s[1] == rcpt]
    return (st[-1][2], st[-1][3]) if st else (None, None)


def lines(sink, verb):
    return [e["line"] for e in sink.commands(verb)]


# --- 1. ASCII local parts at IDN domains, no SMTPUTF8 at the server --------
u1, u2, u3 = "user@bücher.test", "Other@BÜCHER.test", "x@faß.test"
ju = "jürgen@bücher.test"
res, log = run([u1, u2, u3, ju], "absender@bücher.test")
good = is_(res.rc, 0, "IDN domains, ASCII local parts: exit 0 (the UTF-8 "
           "local part is bounced in the agent's own DSN)")
for r in (u1, u2, u3):
    good &= is_(status(log, r), ("2.0.0", "sent"), "%s delivered" % r)
good &= is_(status(log, ju), ("5.6.7", "bounced"),
            "UTF-8 local part without SMTPUTF8 at the server: 5.6.7")
good &= is_(sorted(lines(plain, "RCPT")),
            sorted(["RCPT TO:<user@xn--bcher-kva.test>",
                    "RCPT TO:<Other@xn--bcher-kva.test>",
                    "RCPT TO:<x@xn--fa-hia.test>"]),
            "RCPT TO with A-labels (UTS #46: upper case mapped, ß kept)")
mail = lines(plain, "MAIL")
good &= ok(len(mail) >= 1 and all(
    m.startswith("MAIL FROM:<absender@xn--bcher-kva.test>") for m in mail),
    "MAIL FROM with the sender's domain as A-label")
good &= ok(not any("SMTPUTF8" in m for m in mail),
           "no SMTPUTF8 parameter (the server does not offer it)")
good &= ok(not any(ord(c) > 127 for l in lines(plain, None) for c in l),
           "nothing but ASCII crossed the wire")
good &= is_(fass.connections(), 0,
            "fass.test's server never contacted (no IDNA2003 mapping)")
if not good:
    diag(repr(res))
    diag("\n".join(log))
    diag(repr(plain.transcript()))

# --- 2. nexthop as Postfix passes it: the UTF-8 recipient domain ----------
n = len(lines(plain, "RCPT"))
res, log = run(["second@bücher.test"], "s@src.test", nexthop="bücher.test")
good = is_(res.rc, 0, "nexthop bücher.test (the recipients' domain, "
           "UTF-8): MX lookup, delivered")
good &= is_(lines(plain, "RCPT")[n:], ["RCPT TO:<second@xn--bcher-kva.test>"],
            "the recipient reached bücher.test's MX as an A-label")
if not good:
    diag(repr(res))
    diag("\n".join(log))

# --- 3. a server with SMTPUTF8: UTF-8 local part, domain as A-label --------
res, log = run(["jürgen@müller.test", "anna@müller.test"],
               "absender@bücher.test")
good = is_(res.rc, 0, "SMTPUTF8 offered: both delivered")
good &= ok(any(m.endswith(" SMTPUTF8") or " SMTPUTF8 " in m
               for m in lines(utf8, "MAIL")),
           "MAIL carries SMTPUTF8 for the UTF-8 local part")
good &= is_(sorted(lines(utf8, "RCPT")),
            sorted(["RCPT TO:<jürgen@xn--mller-kva.test>",
                    "RCPT TO:<anna@xn--mller-kva.test>"]),
            "the domain goes as A-label with SMTPUTF8 too")
if not good:
    diag(repr(res))
    diag("\n".join(log))

done()
