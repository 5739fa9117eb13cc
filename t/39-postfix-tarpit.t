#!/usr/bin/env python3
# 39-postfix-tarpit.t - one tarpit must not stall everyone else's mail
# (DESIGN §11), through real Postfix: a tarpit MX (accepts, never greets)
# and a healthy Postfix receiver; 30 messages to the tarpit's domain are
# queued BEFORE 30 to the healthy one.
#   1. Postfix's own smtp(8), same run: the time it takes for the 30
#      healthy ones (its per-destination scheduling keeps the tarpit's
#      messages to their own destination);
#   2. LMTP mode, all mail to one socket (qmgr sees ONE destination):
#      Postfix lmtp -> spawn(8) (maxproc 20) -> rapidretry-agent --lmtp:
#      the 30 healthy ones arrive within smtp(8)'s time + a few seconds,
#      the tarpit never sees more than the slow-start window of sessions,
#      and every tarpit message is still in Postfix's queue, deferred with
#      a reason, none lost; after the greeting timeouts the tarpit is
#      marked down (4.4.1 delivery temporarily suspended, no connect);
#   3. the tarpit's address comes back as a working server: after the
#      down time a queue flush delivers all 30, each exactly once;
#   4. the same in pipe mode with one static nexthop ("rapidretry:batch",
#      one queue for everything): healthy mail within smtp(8)'s time + a
#      few seconds, at most the window on the tarpit, nothing lost.
import os
import re
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver, Sender
from lmtpsender import LmtpSender
from badserver import BadServer
from mxtest import AddrSink

rrtest.require_root()
rrtest.agent_binary()

N = 30
GREETING_TIMEOUT = 20
TAR = ["t%02d@tarpit.test" % i for i in range(N)]
GOOD = ["g%02d@good.test" % i for i in range(N)]
DISCARD = "src.test=discard:"

tarpit = BadServer("tarpit")
ptar = tarpit.start()
recv = Receiver("recv", domains=("good.test",)).start()


def submit_all(snd):
    """submit_all - the 30 tarpit messages first, then the 30 healthy
    ones; returns the time the first healthy one was submitted."""
    for r in TAR:
        snd.submit("s@src.test", [r])
    t0 = time.monotonic()
    for r in GOOD:
        snd.submit("s@src.test", [r])
    return t0


def healthy_time(t0, since):
    """healthy_time - seconds from T0 until all 30 healthy ones are in the
    receiver's Maildir (beyond the SINCE already there), or None."""
    ok_ = rrtest.wait_until(lambda: len(recv.delivered()) >= since + N, 90,
                            what="30 healthy messages delivered")
    return time.monotonic() - t0 if ok_ else None


# --- 1. Postfix smtp(8) ---------------------------------------------------------
smtp = Sender("smtp", relay_port=recv.port, smtp=True, main={
    "transport_maps": "inline:{tarpit.test=smtp:[127.0.0.1]:%d, %s}"
                      % (ptar, DISCARD),
    "smtp_helo_timeout": "%ds" % GREETING_TIMEOUT,
}).start()
t0 = submit_all(smtp)
t_smtp = healthy_time(t0, 0)
ok(t_smtp is not None, "Postfix smtp(8): the 30 healthy messages arrive in "
   "%.1fs with the tarpit's 30 in front" % (t_smtp or -1))
smtp.stop()
rrtest.wait_until(lambda: tarpit.counts()[1] == 0, 10,
                  what="smtp(8)'s tarpit sessions closed")
tarpit.reset()

# --- 2. LMTP mode ----------------------------------------------------------------
agent = rrtest.Agent(name="snd/agent", relay="", deadline="120s", timeouts={
    "connect_timeout": "5s", "helo_timeout": "%ds" % GREETING_TIMEOUT},
    extra_text="\n[schedule]\ndown_time = 15s\n[routes]\n"
               "tarpit.test = relay:[127.0.0.1]:%d\n"
               "good.test = relay:[127.0.0.1]:%d\n" % (ptar, recv.port))
snd = LmtpSender("snd", relay_port=recv.port, agent=agent, main={
    "transport_maps": "inline:{%s}" % DISCARD,
    # all mail is one destination to qmgr: the whole socket at once
    "rapidretry_initial_destination_concurrency": "20",
    "rapidretry_destination_concurrency_limit": "20",
}).start()
before = len(recv.delivered())
t0 = submit_all(snd)
t_lmtp = healthy_time(t0, before)
ok(t_lmtp is not None and t_smtp is not None and t_lmtp <= t_smtp + 5,
   "LMTP mode: the 30 healthy ones arrive in %.1fs (smtp(8): %.1fs), not "
   "after the tarpit's greeting timeout (%ds)"
   % (t_lmtp or -1, t_smtp or -1, GREETING_TIMEOUT))
is_(sorted(r for r in recv.delivered() if r.endswith("@good.test")),
    sorted(GOOD * 2), "each healthy one delivered once in each run")


def tarpit_queued():
    q = snd.queued_rcpts()
    return {r: why for r, why in q.items() if r.endswith("@tarpit.test")}


# every tarpit message tried once: deferred with a reason
rrtest.wait_until(lambda: len(tarpit_queued()) == N and all(
    tarpit_queued().values()), GREETING_TIMEOUT + 40,
    what="30 tarpit messages deferred")
q = tarpit_queued()
is_(sorted(q), sorted(TAR), "all 30 tarpit messages are in Postfix's "
    "queue, none lost")
ok(all(q.values()), "each deferred with a reason")
n445 = len([v for v in q.values() if "concurrency limit reached" in v])
ntimeout = len([v for v in q.values() if "timed out while receiving the "
                "initial server greeting" in v])
ok(n445 >= 1 and n445 + ntimeout == N, "%d deferred 4.4.5 (concurrency "
   "limit reached), %d after the greeting timeout" % (n445, ntimeout))
conns, active, most = tarpit.counts()
ok(most <= 5, "the tarpit saw at most %d sessions at once (window 5, cap "
   "10)" % most)
is_(ntimeout, conns, "each tarpit session is one message's attempt")
rc_lines = [l for l in snd.log_lines()
            if re.search(r"to=<t\d+@tarpit\.test>.*status=deferred", l)]
ok(rc_lines and all("rapidretry" in l for l in rc_lines),
   "Postfix logged each tarpit deferral with the agent's reason")
# the tarpit is now down: the next message is deferred without a connect
conns0 = tarpit.counts()[0]
mark = snd.mark()
qid = snd.submit("s@src.test", ["late@tarpit.test"])
st = rrtest.wait_until(lambda: snd.statuses(qid, mark), 30,
                       what="the late one's status")
like(st[0][3] if st else "", r"4\.4\.1 (<late@tarpit\.test>: )?delivery temporarily suspended: "
     r"conversation with 127\.0\.0\.1\[127\.0\.0\.1\] timed out",
     "after the greeting timeouts: 4.4.1 delivery temporarily suspended")
is_(tarpit.counts()[0], conns0, "and no connection to the tarpit for it")

# --- 3. the server comes back -------------------------------------------------------
tarpit.stop()
back = AddrSink("127.0.0.1", ptar, {"hostname": "back.test"})
back.start()
time.sleep(16)  # the down time
snd.flush()
rrtest.wait_until(lambda: len(back.messages()) >= N + 1, 60,
                  what="the tarpit's queue delivered")
rrtest.wait_until(lambda: not tarpit_queued(), 30, what="queue empty")
got = sorted(r for m in back.messages() for r in m["rcpts"])
is_(got, sorted(TAR + ["late@tarpit.test"]), "the server back: every "
    "queued message delivered, each exactly once")
if not ok(not tarpit_queued(), "nothing of the tarpit's left in the "
          "queue"):
    for r, why in sorted(tarpit_queued().items()):
        diag("%s: %s" % (r, why))
if not (t_lmtp and t_smtp and t_lmtp <= t_smtp + 5):
    diag("\n".join(snd.agent_log()[-60:]))
snd.stop()

# --- 4. the same in pipe mode: one static nexthop ("batch") ---------------------------
tar2 = BadServer("tarpit")
ptar2 = tar2.start()
pagent = rrtest.Agent(name="pipe/agent", relay="", deadline="120s", timeouts={
    "connect_timeout": "5s", "helo_timeout": "10s"},
    extra_text="\n[routes]\ntarpit.test = relay:[127.0.0.1]:%d\n"
               "good.test = relay:[127.0.0.1]:%d\n" % (ptar2, recv.port))
psnd = Sender("pipe", relay_port=recv.port, agent=pagent,
              transport="rapidretry:batch", main={
                  "transport_maps": "inline:{%s}" % DISCARD,
                  "rapidretry_destination_concurrency_limit": "20",
                  "rapidretry_initial_destination_concurrency": "20",
              }).start()
before = len(recv.delivered())
t0 = submit_all(psnd)
t_pipe = healthy_time(t0, before)
ok(t_pipe is not None and t_smtp is not None and t_pipe <= t_smtp + 5,
   "pipe mode, one nexthop: the 30 healthy ones arrive in %.1fs (smtp(8): "
   "%.1fs)" % (t_pipe or -1, t_smtp or -1))
ok(tar2.counts()[2] <= 5, "the tarpit saw at most %d sessions at once"
   % tar2.counts()[2])


def pipe_queued():
    return {r: why for r, why in psnd.queued_rcpts().items()
            if r.endswith("@tarpit.test")}


rrtest.wait_until(lambda: len(pipe_queued()) == N and all(
    pipe_queued().values()), 60, what="30 tarpit messages deferred (pipe)")
is_(sorted(pipe_queued()), sorted(TAR), "all 30 tarpit messages queued, "
    "each with a reason: %d concurrency, %d timeouts" % (
        len([v for v in pipe_queued().values() if "concurrency" in v]),
        len([v for v in pipe_queued().values() if "timed out" in v])))
done()
