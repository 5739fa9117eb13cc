#!/usr/bin/env python3
# 60-postfix-mx.t - MX routing and grouping across domains through real
# Postfix (DESIGN §5). unbound on loopback serves a zone where
# a1..a3.test share MX A (a receiver Postfix with smtpd_recipient_limit =
# 4 on 127.0.0.2), b1..b2.test share MX B (our scripted server on
# 127.0.0.3 that answers "451 4.3.0 Multiple destination domains per
# transaction is unsupported" to a second domain) and n1.test is null MX.
# The sender Postfix has default_transport = rapidretry:batch and the agent
# routes every domain with lookup-mx:query=unbound;port=PORT.
#  1. One message to 30 recipients over the 6 domains: one agent run,
#     A: 1 connection, B: one transaction per domain, null MX: 5.1.10.
#  2. A domain whose better MX refuses connections (delivered through the
#     second) and a SERVFAIL domain (4.4.3), in a second message.
#  3. The same 30-recipient message through Postfix's own smtp client with
#     per-domain transport_maps entries (what Postfix does per MX domain):
#     first-attempt numbers as diag lines, for the note.
import os
import re
import sys
sys.dont_write_bytecode = True
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
import dnsserver
from mxtest import (AddrReceiver, AddrSink, common_port, require_dns,
                    start_dns)
from postfix import Sender

require_dns()

ADDR_A, ADDR_B, ADDR_C, ADDR_DOWN = ("127.0.0.2", "127.0.0.3", "127.0.0.4",
                                    "127.0.0.5")
A_DOMAINS = ["a1.test", "a2.test", "a3.test"]
B_DOMAINS = ["b1.test", "b2.test"]
NULL_DOMAIN = "n1.test"
A_RCPTS = ["u%02d@%s" % (i, d) for d in A_DOMAINS for i in range(1, 7)]
B_RCPTS = ["u%02d@%s" % (i, d) for d in B_DOMAINS for i in range(1, 6)]
N_RCPTS = ["u01@%s" % NULL_DOMAIN, "u02@%s" % NULL_DOMAIN]
RCPTS = A_RCPTS + B_RCPTS + N_RCPTS          # 18 + 10 + 2 = 30
TP_RCPTS = ["t1@tp.test", "t2@tp.test"]      # MX 10 refuses, MX 20 works
SF_RCPTS = ["s1@x.broken"]                   # SERVFAIL

ZONE = (["%s MX 10 mx-a.test." % d[:-5] for d in A_DOMAINS]
        + ["%s MX 10 mx-b.test." % d[:-5] for d in B_DOMAINS]
        + ["n1 MX 0 .",
           "tp MX 10 mx-down.test.", "tp MX 20 mx-c.test.",
           "mx-a A " + ADDR_A, "mx-b A " + ADDR_B, "mx-c A " + ADDR_C,
           "mx-down A " + ADDR_DOWN])


# --- set-up ------------------------------------------------------------------
dns = start_dns(ZONE)
for name, want in (("a2.test", 0), ("n1.test", 0), ("x.broken", 2)):
    if dnsserver.query(dns.port, name) != want:
        rrtest.bail("unbound: %s does not answer rcode %d" % (name, want))

PORT = common_port([ADDR_A, ADDR_B, ADDR_C, ADDR_DOWN])
recv_a = AddrReceiver("recva", ADDR_A, PORT, domains=A_DOMAINS,
                      main={"smtpd_recipient_limit": "4"}).start()
sink_b = AddrSink(ADDR_B, PORT, {"hostname": "mx-b.test",
                                 "one_domain": True})
sink_b.start()
sink_c = AddrSink(ADDR_C, PORT, {"hostname": "mx-c.test"})
sink_c.start()

ROUTE = "lookup-mx:query=127.0.0.1:%d;port=%d" % (dns.port, PORT)
agent = rrtest.Agent(name="snd-agent", relay="", deadline="40s",
                     extra_text="\n[routes]\n* = %s\n" % ROUTE)
snd = Sender("snd", transport="rapidretry:batch", agent=agent,
             recipient_limit=50).start()
diag("unbound on 127.0.0.1:%d; MX A %s:%d (Postfix, limit 4), MX B %s:%d "
     "(one domain per transaction), MX C %s:%d, down %s:%d"
     % (dns.port, ADDR_A, PORT, ADDR_B, PORT, ADDR_C, PORT, ADDR_DOWN, PORT))


def todo_ok(cond, name, why):
    """todo_ok - a TAP TODO test point (a known bug, not a failure)."""
    rrtest._count += 1
    print("%s %d - %s # TODO %s" % ("ok" if cond else "not ok",
                                    rrtest._count, name, why), flush=True)


def qid_lines(lines, qid):
    """qid_lines - the agent log lines of one queue id."""
    return [l for l in lines if re.search(r"\]: %s: " % qid, l)]


def by_rcpt(st):
    """by_rcpt - {rcpt: (dsn, status, text)} from agent_status tuples."""
    return {r.lower(): (d, s, t) for q, r, d, s, t in st}


def wait_statuses(sender, qid, n, timeout=45):
    """wait_statuses - Postfix's status lines for QID once there are N."""
    return rrtest.wait_until(lambda: len(sender.statuses(qid)) >= n
                             and sender.statuses(qid), timeout,
                             what="%d statuses for %s" % (n, qid)) or []


# --- 1. the 30-recipient message through the agent ---------------------------
t0 = time.monotonic()
qid = snd.submit("s@src.test", RCPTS)
ok(qid, "message queued at the sender: %s" % qid)
pst = wait_statuses(snd, qid, 30)
took = time.monotonic() - t0
rrtest.wait_until(lambda: len(recv_a.delivered()) >= len(A_RCPTS), 15,
                  what="A's Maildir")
rrtest.wait_until(lambda: recv_a.sessions(), 10, what="A's disconnect")

alog = qid_lines(snd.agent_log(), qid)
ast = by_rcpt(rrtest.agent_status(alog))
good = is_(len(rrtest.agent_pids(alog)), 1, "one agent invocation")
good &= is_(sorted(ast), sorted(RCPTS),
            "the agent logged one status line per recipient")
good &= is_(sorted(r for r in RCPTS if ast.get(r, ("", ""))[1] == "sent"),
            sorted(A_RCPTS + B_RCPTS),
            "the agent logged status=sent for every A and B recipient")
good &= is_(recv_a.delivered(), sorted(A_RCPTS),
            "A: its 18 recipients in A's Maildir, each exactly once")
good &= is_(sink_b.delivered(), sorted(B_RCPTS),
            "B: its 10 recipients accepted by B, each exactly once")
good &= is_(recv_a.connections(), 1,
            "A: three domains over one connection")
good &= is_(recv_a.transactions(), 5,
            "A: 5 transactions (18 recipients, limit 4: learned after one)")
good &= is_(sorted(recv_a.nrcpts()), [2, 4, 4, 4, 4],
            "A: messages of 4+4+4+4+2 recipients")
btx = sink_b.transactions()
bdoms = [sorted(set(r.rpartition("@")[2] for r in m["rcpts"]))
         for m in sink_b.messages()]
good &= is_(sink_b.connections(), 1, "B: one connection")
good &= is_(len(btx), 2, "B: 2 transactions on the wire (MAIL commands)")
good &= is_(bdoms, [["b1.test"], ["b2.test"]],
            "B: one message per domain (one domain per transaction)")
good &= ok(any(re.search(r"learned .*one domain per transaction", l)
               for l in alog), "B: the agent logged that it learned "
           "one domain per transaction")
ok(not any(re.search(r"learned 0 ", l) for l in alog),
   "B: the learned line has no stray count")
for r in N_RCPTS:
    good &= is_(ast.get(r, ("", ""))[:2], ("5.1.10", "bounced"),
                "null MX: %s bounced 5.1.10 in the agent's log" % r)
    good &= like(ast.get(r, ("", "", ""))[2], r"(?i)null MX|does not accept",
                 "null MX: %s: the reason says null MX" % r)
ok(sink_c.connections() == 0, "C: not contacted by the first message")
# delivered + bounced, nothing deferred: the agent sends the DSN for the
# null-MX recipients itself and the batch is done (exit 0, DESIGN §7)
pstat = sorted(set(s for r, d, s, t in pst))
good &= is_((len(pst), pstat), (30, ["sent"]),
            "pipe(8): one status for all 30: sent (exit 0, DSN by the agent)")
atx = len(btx) + recv_a.transactions()
diag("rapidretry, 30 rcpts / 6 domains: %d delivered at the first attempt "
     "of %d deliverable, %d null-MX bounced, %d connection(s) (A %d, B %d), "
     "%d transactions (A %d, B %d), 1 agent run, %.1fs"
     % (len(recv_a.delivered()) + len(sink_b.delivered()),
        len(A_RCPTS + B_RCPTS),
        len([r for r in N_RCPTS if ast.get(r, ("",))[0] == "5.1.10"]),
        recv_a.connections() + sink_b.connections(), recv_a.connections(),
        sink_b.connections(), atx, recv_a.transactions(), len(btx), took))
if not good:
    diag("\n".join(alog))
    diag(sink_b.dump())
    diag("\n".join(snd.log_lines()[-20:]))

# --- 2. refused first MX, SERVFAIL -------------------------------------------
qid2 = snd.submit("s@src.test", TP_RCPTS + SF_RCPTS)
ok(qid2, "second message queued: %s" % qid2)
pst2 = wait_statuses(snd, qid2, 3)
alog2 = qid_lines(snd.agent_log(), qid2)
ast2 = by_rcpt(rrtest.agent_status(alog2))
good = is_(sink_c.delivered(), sorted(TP_RCPTS),
           "two MX preferences, the first refusing: delivered through the "
           "second, once")
good &= is_(sink_c.connections(), 1, "C: one connection")
good &= ok(any(re.search(r"%s\]:%d: Connection refused" % (ADDR_DOWN, PORT),
                         l) for l in alog2),
           "the agent logged the refused connection to the first MX")
for r in TP_RCPTS:
    good &= like(ast2.get(r, ("", "", ""))[1], r"^sent$",
                 "%s: sent in the agent's log" % r)
for r in SF_RCPTS:
    good &= is_(ast2.get(r, ("", ""))[:2], ("4.4.3", "deferred"),
                "SERVFAIL: %s deferred 4.4.3" % r)
good &= ok(pst2 and all(s == "deferred" and d.startswith("4.")
                        for r, d, s, t in pst2),
           "pipe(8): the batch deferred (SERVFAIL is temporary)")
good &= is_(len(recv_a.delivered()) + len(sink_b.delivered()), 28,
            "A and B got nothing more")
if not good:
    diag("\n".join(alog2))
    diag(sink_c.dump())

# --- 3. the same message through Postfix's own smtp client -------------------
# With MX lookups Postfix queues per recipient domain (nexthop = domain) and
# never puts two domains in one transaction. Without DNS for Postfix, each
# domain gets its own transport (one queue per transport and nexthop) to
# its MX's address: the same queues Postfix would make.
names = {d: "mx" + d.split(".")[0] for d in A_DOMAINS + B_DOMAINS}
tmap_lines = ["%s %s:[%s]:%d" % (d, names[d],
                                 ADDR_A if d in A_DOMAINS else ADDR_B, PORT)
              for d in A_DOMAINS + B_DOMAINS]
tmap_lines.append("%s error:5.1.10 Domain %s does not accept mail (nullMX)"
                  % (NULL_DOMAIN, NULL_DOMAIN))
tmap = rrtest.write_file(os.path.join(rrtest.tmpdir(), "psnd-transport"),
                         "\n".join(tmap_lines) + "\n")
psnd = Sender("psnd", relay_port=PORT, smtp=True,
              main={"transport_maps": "texthash:" + tmap, "relayhost": ""})
psnd.master_extra = "".join("%s unix - - n - - smtp\n" % n
                            for n in sorted(set(names.values())))
psnd.start()
a_mark = recv_a.mark()
a_before = list(recv_a.delivered())
b_conn0, b_tx0, b_msg0 = (sink_b.connections(), len(sink_b.transactions()),
                          len(sink_b.messages()))
t0 = time.monotonic()
pq = psnd.submit("s@src.test", RCPTS)
ok(pq, "contrast message queued: %s" % pq)
cst = wait_statuses(psnd, pq, 30)
took = time.monotonic() - t0
is_(len(cst), 30, "Postfix smtp: the first attempt ended for all 30")
csent = sorted(r.lower() for r, d, s, t in cst if s == "sent")
cdef = [(r, t) for r, d, s, t in cst if s == "deferred"]
cbounce = [r for r, d, s, t in cst if s == "bounced"]
rrtest.wait_until(lambda: len(recv_a.delivered()) - len(a_before)
                  >= len([r for r in csent if r in A_RCPTS]), 10)
rrtest.wait_until(lambda: recv_a.connections(a_mark)
                  == len(recv_a.sessions(a_mark)), 10, what="A's disconnects")
a_new = sorted((Counter(recv_a.delivered()) - Counter(a_before)).elements())
b_new = sorted(r.lower() for m in sink_b.messages()[b_msg0:]
               for r in m["rcpts"])
is_(sorted(a_new + b_new), csent,
    "Postfix smtp: A and B hold exactly what it logged sent")
is_(sorted(cbounce), sorted(N_RCPTS), "Postfix smtp: null MX bounced")
ctx = recv_a.transactions(a_mark) + len(sink_b.transactions()) - b_tx0
cconn = recv_a.connections(a_mark) + sink_b.connections() - b_conn0
diag("Postfix smtp, 30 rcpts / 6 domains: %d delivered at the first "
     "attempt of %d deliverable, %d deferred (next try after "
     "minimal_backoff_time), %d bounced, %d connection(s) (A %d, B %d), "
     "%d transactions (A %d, B %d), %.1fs%s"
     % (len(csent), len(A_RCPTS + B_RCPTS), len(cdef), len(cbounce), cconn,
        recv_a.connections(a_mark), sink_b.connections() - b_conn0, ctx,
        recv_a.transactions(a_mark), len(sink_b.transactions()) - b_tx0,
        took, (": " + cdef[0][1][:120]) if cdef else ""))
diag("B messages from Postfix smtp: %d" % (len(sink_b.messages()) - b_msg0))
done()
