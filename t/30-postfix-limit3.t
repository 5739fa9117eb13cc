#!/usr/bin/env python3
# 30-postfix-limit3.t - sender Postfix -> rapidretry-agent (pipe(8)) ->
# receiver Postfix with smtpd_recipient_limit = 3. One message to 20
# recipients in two domains: all delivered exactly once by ONE agent run,
# 7 transactions on 1 connection. Then the same message through Postfix's
# own smtp client, for contrast (its numbers go to diag lines).
import os
import sys
sys.dont_write_bytecode = True
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver, Sender

rrtest.require_root()
rrtest.agent_binary()

RCPTS = (["a%02d@d1.test" % i for i in range(1, 11)]
         + ["b%02d@d2.test" % i for i in range(1, 11)])

recv = Receiver("recv", main={"smtpd_recipient_limit": "3"}).start()
snd = Sender("snd", relay_port=recv.port).start()

t0 = time.monotonic()
qid = snd.submit("s@src.test", RCPTS)
ok(qid, "message queued at the sender: %s" % qid)
st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= 20
                       and snd.statuses(qid), 45,
                       what="20 statuses from pipe(8)")
took = time.monotonic() - t0
rrtest.wait_until(lambda: recv.sessions(), 10, what="receiver disconnect")
rrtest.wait_until(snd.queue_empty, 10, what="empty sender queue")

good = is_(recv.delivered(), sorted(RCPTS),
           "all 20 in the receiver's Maildir, each exactly once")
good &= is_([s for r, d, s, t in st], ["sent"] * 20,
            "pipe(8) logged status=sent for all 20")
good &= ok(snd.queue_empty(), "the sender's queue is empty")
good &= is_(len(rrtest.agent_pids(snd.agent_log())), 1,
            "one agent invocation")
good &= is_(recv.connections(), 1, "the receiver saw 1 connection")
good &= is_(recv.transactions(), 7, "the receiver saw 7 transactions")
good &= is_(sorted(recv.nrcpts()), [2, 3, 3, 3, 3, 3, 3],
            "the receiver queued messages of 3+3+3+3+3+3+2 recipients")
sent = [r.lower() for q, r, d, s, t in rrtest.agent_status(
    snd.agent_log(), status="sent") if q == qid]
good &= is_(sorted(sent), sorted(RCPTS),
            "the agent's log has 20 status=sent lines, one per recipient")
diag("rapidretry: %d of 20 delivered in one run, %.1fs from submission, "
     "%d connection(s), %d transactions, sessions %r"
     % (len(recv.delivered()), took, recv.connections(),
        recv.transactions(), recv.sessions()))
if not good:
    diag("\n".join(snd.agent_log()))
    diag("\n".join(snd.log_lines()[-30:]))

# --- contrast: Postfix's own smtp client ------------------------------------
# Two domains that share one MX: Postfix queues per domain (nexthop), so
# each domain gets its own delivery. Emulated without DNS by two nexthop
# names for the same address: [127.0.0.1] and [localhost].
recv2 = Receiver("recv2", main={"smtpd_recipient_limit": "3"}).start()
tmap = rrtest.write_file(os.path.join(rrtest.tmpdir(), "psnd-transport"),
                         "d1.test smtp:[127.0.0.1]:%d\n"
                         "d2.test smtp:[localhost]:%d\n"
                         % (recv2.port, recv2.port))
psnd = Sender("psnd", relay_port=recv2.port, smtp=True,
              main={"transport_maps": "texthash:" + tmap,
                    "relayhost": ""}).start()
t0 = time.monotonic()
pq = psnd.submit("s@src.test", RCPTS)
ok(pq, "contrast message queued: %s" % pq)
pst = rrtest.wait_until(lambda: len(psnd.statuses(pq)) >= 20
                        and psnd.statuses(pq), 45,
                        what="first attempt of Postfix smtp")
is_(len(pst or []), 20, "Postfix smtp: the first attempt ended for all 20")
psent = sorted(r.lower() for r, d, s, t in pst if s == "sent")
pdef = [t for r, d, s, t in pst if s == "deferred"]
rrtest.wait_until(lambda: len(recv2.delivered()) >= len(psent), 10)
is_(recv2.delivered(), psent,
    "Postfix smtp: the Maildir holds exactly the ones it logged sent")
ok(len(psent) < 20, "Postfix smtp leaves some recipients for later")
diag("contrast: Postfix smtp -> Postfix limit 3: %d of 20 delivered at the "
     "first attempt (%d connection(s), %d transactions), %d deferred "
     "(next try after minimal_backoff_time, 300s)%s"
     % (len(psent), recv2.connections(), recv2.transactions(), len(pdef),
        (": " + pdef[0]) if pdef else ""))
done()
