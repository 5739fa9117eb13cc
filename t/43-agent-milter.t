#!/usr/bin/env python3
# 43-agent-milter.t - sender Postfix -> rapidretry-agent (pipe(8)) ->
# receiver Postfix with rapidretry-milter and main.cf.example's receiving
# limits (DESIGN.md §6, §8). One message to 20 recipients per mode, each
# delivered exactly once by ONE agent run on ONE connection:
#   strict  20 transactions
#   domain  4 domains interleaved in argv order: 4 transactions
#   policy  4 classes interleaved in argv order: 4 transactions (the agent
#           must not learn "limit 1" from 250 451 451 451 250 ...)
# Then Postfix's own smtp client to the same strict receiver, for contrast.
# The milter's mode changes by SIGHUP between the runs.
import collections
import os
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
from postfix import Sender
import agentmilter as am
from agentmilter import start_milter, reload_milter, milter_receiver

rrtest.require_root()
rrtest.agent_binary()
am.need_milter()

DOMAINS = ("d1.test", "d2.test", "d3.test", "d4.test")

milter = start_milter("milter", "strict")
recv = milter_receiver("recv", milter, DOMAINS)
snd = Sender("snd", relay_port=recv.port)
# each case reconfigures the same receiver: limits learned in one case must
# not carry over to the next (limits_expire = 0: no persisted limits)
snd.agent.write_conf(agent_extra={"limits_expire": "0"})
snd.start()


def agent_case(label, rcpts, want_tx):
    s = am.agent_case(recv, snd, label, rcpts, want_tx)
    return s["sessions"], s["seconds"], s["learned"]


# --- strict: one recipient per transaction ----------------------------------
RS = ["s%02d@d1.test" % i for i in range(1, 21)]
sess, secs, learned = agent_case("strict", RS, 20)
is_(sess and sess[0].get("rcpt"), (20, 39),
    "strict: 20 of 39 RCPTs accepted (20 in the first round, then 1 per "
    "round after learning limit 1)")
ok(not any(l.startswith("limit ") and not l.startswith("limit 1 ")
           for l in learned) and any(l.startswith("limit 1 ")
                                     for l in learned),
   "strict: the agent learned limit 1 from 250 451 451 ...")

# --- domain: 20 recipients over 4 domains, interleaved in argv order -------
# Postfix hands pipe(8) the recipients sorted by address: m01@d1 m02@d2
# m03@d3 m04@d4 m05@d1 ... so the domains interleave.
ok(reload_milter(milter, "domain", "default other\n"),
   "milter reloaded in domain mode")
RD = ["m%02d@%s" % (i, DOMAINS[(i - 1) % 4]) for i in range(1, 21)]
sess, secs, learned = agent_case("domain", RD, 4)
ok(not any(l.startswith("limit ") for l in learned),
   "domain: no count limit learned (%r)" % (learned,))
ok(any("one domain per transaction" in l for l in learned),
   "domain: the agent learned one domain per transaction")
ok(not any(l.startswith("0 ") for l in learned),
   "domain: the agent logs \"learned one domain per transaction\" "
   "without a count")

# --- policy: 4 classes interleaved in argv order ----------------------------
CLASSES = "".join("p%02d@d1.test class%d\n" % (i, (i - 1) % 4)
                  for i in range(1, 21)) + "default other\n"
ok(reload_milter(milter, "policy", CLASSES),
   "milter reloaded in policy mode (p01 class0, p02 class1, p03 class2, "
   "p04 class3, p05 class0, ...)")
RP = ["p%02d@d1.test" % i for i in range(1, 21)]
sess, secs, learned = agent_case("policy", RP, 4)
ok(not any(l.startswith("limit ") for l in learned),
   "policy: the agent did not learn a count limit (%r)" % (learned,))
is_(sess and sess[0].get("rcpt"), (20, 20 + 15 + 10 + 5),
    "policy: RCPTs 20+15+10+5, 20 accepted (every round carries all the "
    "pending ones)")

# --- contrast: Postfix's own smtp client to the same strict receiver -------
ok(reload_milter(milter, "strict", "default other\n"),
   "milter reloaded in strict mode")
psnd = Sender("psnd", relay_port=recv.port, smtp=True).start()
RC = ["c%02d@d1.test" % i for i in range(1, 21)]
rmark = recv.mark()
before = collections.Counter(recv.delivered())
pq = psnd.submit("s@src.test", RC)
ok(pq, "contrast message queued: %s" % pq)
pst = rrtest.wait_until(lambda: len(psnd.statuses(pq)) >= 20
                        and psnd.statuses(pq), 45,
                        what="first attempt of Postfix smtp")
is_(len(pst or []), 20, "Postfix smtp: the first attempt ended for all 20")
psent = sorted(r.lower() for r, d, s, t in pst or [] if s == "sent")
pdef = [t for r, d, s, t in pst or [] if s == "deferred"]
rrtest.wait_until(lambda: sum((collections.Counter(recv.delivered())
                               - before).values()) >= len(psent), 10)
new = sorted((collections.Counter(recv.delivered()) - before).elements())
is_(new, psent,
    "Postfix smtp: the Maildir holds exactly the ones it logged sent")
ok(len(psent) <= 3,
   "Postfix smtp: at most a few delivered at the first attempt (%d)"
   % len(psent))
is_(len(pdef), 20 - len(psent), "Postfix smtp: the rest deferred")
ok(pdef and all("4.5.3" in t and "retry=0" in t for t in pdef),
   "Postfix smtp: deferred with the milter's 451 4.5.3 ... retry=0")
diag("contrast: Postfix smtp -> Postfix + rapidretry-milter strict: %d of "
     "20 delivered at the first attempt (%d connection(s), %d "
     "transactions, sessions %r), %d deferred (next try after "
     "minimal_backoff_time, 300s)%s"
     % (len(psent), recv.connections(rmark), recv.transactions(rmark),
        recv.sessions(rmark), len(pdef), (": " + pdef[0]) if pdef else ""))
psnd.stop()

# stopped first: LeakSanitizer reports at exit
is_(milter.stop(), 0, "milter: SIGTERM, exit status 0")
ok(am.sanitizer_free(milter), "no sanitizer reports from the milter")
diag("milter: " + " | ".join(l for l in milter.read_log().splitlines()
                             if "transactions" in l)[-400:])
done()
