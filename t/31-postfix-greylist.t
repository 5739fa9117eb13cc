#!/usr/bin/env python3
# 31-postfix-greylist.t - sender Postfix -> rapidretry-agent -> receiver
# Postfix that greylists the recipients of one domain (postgrey through a
# restriction class; without postgrey, an access map with a 450 reply that
# is switched off for the retry). First run: d1.test delivered, d2.test
# deferred with the greylisting text. After the delay, postqueue -f: the
# second run delivers only d2.test. Every recipient exactly once.
import os
import re
import shutil
import signal
import subprocess
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

D1 = ["g%d@d1.test" % i for i in range(1, 4)]
D2 = ["g%d@d2.test" % i for i in range(1, 4)]
DELAY = 3
POSTGREY = shutil.which("postgrey") or (
    "/usr/sbin/postgrey" if os.access("/usr/sbin/postgrey", os.X_OK)
    else None)
if os.environ.get("RR_NO_POSTGREY") == "1":     # test the fallback
    POSTGREY = None

grey_map = os.path.join(rrtest.tmpdir(), "greylist-map")
main = {"smtpd_recipient_restrictions":
        "check_recipient_access texthash:%s, permit" % grey_map}

if POSTGREY:
    pgport = rrtest.free_port()
    pgdir = rrtest.subdir("postgrey", owner="postgrey", mode=0o700)
    empty = rrtest.write_file(os.path.join(rrtest.tmpdir(), "empty"), "")
    pg = subprocess.Popen(
        [POSTGREY, "--inet=127.0.0.1:%d" % pgport, "--dbdir=" + pgdir,
         "--delay=%d" % DELAY, "--auto-whitelist-clients=0",
         "--whitelist-clients=" + empty, "--whitelist-recipients=" + empty,
         "--greylist-text=Greylisted for %s seconds",
         "--user=postgrey", "--group=postgrey"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(rrtest.tmpdir(), "postgrey.err"), "w"),
        start_new_session=True)

    def stop_pg():
        if pg.poll() is None:
            pg.terminate()
            try:
                pg.wait(5)
            except subprocess.TimeoutExpired:
                pg.kill()
                pg.wait()
    rrtest.at_cleanup(stop_pg)
    if not rrtest.wait_until(lambda: rrtest.port_listening(pgport), 20,
                             what="postgrey"):
        diag(rrtest.read_file(os.path.join(rrtest.tmpdir(), "postgrey.err")))
        rrtest.bail("postgrey did not start")
    rrtest.write_file(grey_map, "d2.test greylist\n")
    main.update({"smtpd_restriction_classes": "greylist",
                 "greylist": "check_policy_service inet:127.0.0.1:%d"
                 % pgport})
    GREY_RE = r"4\.2\.0 .*Greylisted for \d+ seconds"
    diag("greylisting with postgrey --delay=%d" % DELAY)
else:
    rrtest.write_file(grey_map, "d2.test 450 4.7.1 Greylisted, try again "
                      "later\n")
    GREY_RE = r"4\.7\.1 .*Greylisted, try again later"
    diag("postgrey not installed: greylisting with an access map")

recv = Receiver("recv", main=main).start()
snd = Sender("snd", relay_port=recv.port).start()

# --- first run ----------------------------------------------------------------
qid = snd.submit("s@src.test", D1 + D2)
ok(qid, "message queued at the sender: %s" % qid)
st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= 6
                       and snd.statuses(qid), 30, what="first run")
t_first = time.monotonic()
rrtest.wait_until(lambda: len(recv.delivered()) >= 3, 10)

good = is_(recv.delivered(), sorted(D1),
           "first run: d1.test delivered, d2.test not")
good &= ok(st and all(s == "deferred" for r, d, s, t in st),
           "first run: pipe(8) deferred the batch (one status per run)")
good &= like(st and st[0][3], GREY_RE.split(" ", 1)[1],
             "first run: Postfix's status carries the greylisting text")
queued = snd.queued_rcpts()
good &= ok(all(r in queued for r in D2),
           "first run: the greylisted recipients stay in the sender's queue")
good &= ok(D2[0] in queued and "Greylisted" in queued[D2[0]],
           "first run: ... with the greylisting reason (%r)"
           % queued.get(D2[0]))
log = snd.agent_log()
grey = [r for q, r, d, s, t in rrtest.agent_status(log, status="deferred")
        if q == qid]
sent = [r for q, r, d, s, t in rrtest.agent_status(log, status="sent")
        if q == qid]
good &= is_(sorted(grey), sorted(D2), "agent log: d2.test deferred")
good &= is_(sorted(sent), sorted(D1), "agent log: d1.test sent")
texts = [t for q, r, d, s, t in rrtest.agent_status(log, status="deferred")]
good &= ok(texts and all(
    re.search(GREY_RE, d + " " + t) for q, r, d, s, t in
    rrtest.agent_status(log, status="deferred")),
    "agent log: deferred with the receiver's 4.x.x greylisting reply")
if not good:
    diag("\n".join(log))
    diag("\n".join(recv.log_lines()[-20:]))

# --- retry after the greylisting delay ----------------------------------------
if POSTGREY:
    rrtest.wait_until(lambda: time.monotonic() >= t_first + DELAY + 1,
                      DELAY + 5)
else:
    rrtest.write_file(grey_map, "")
    recv.reload()
smark = snd.mark()
rmark = recv.mark()
snd.flush()
st2 = rrtest.wait_until(lambda: len(snd.statuses(qid, since=smark)) >= 6
                        and snd.statuses(qid, since=smark), 30,
                        what="second run")
rrtest.wait_until(snd.queue_empty, 10, what="empty sender queue")
rrtest.wait_until(lambda: recv.sessions(since=rmark), 10)

good = ok(st2 and all(s == "sent" for r, d, s, t in st2),
          "second run: pipe(8) logged all six sent")
good &= ok(snd.queue_empty(), "second run: the sender's queue is empty")
good &= is_(recv.delivered(), sorted(D1 + D2),
            "every recipient exactly once in the Maildir")
good &= is_(recv.nrcpts(since=rmark), [3],
            "second run: the receiver got one message for the 3 deferred")
log = snd.agent_log()
good &= is_(len(rrtest.agent_pids(log)), 2, "two agent runs")
sent = [r for q, r, d, s, t in rrtest.agent_status(log, status="sent")
        if q == qid]
good &= is_(sorted(sent), sorted(D1 + D2),
            "agent log: each recipient sent once over both runs")


def delays(lines, want_pipe):
    """delays - {rcpt: delay=} of QID's status=sent lines; pipe(8)'s lines
    (they carry delays=) or the agent's own"""
    rx = re.compile(r": %s: to=<([^>]*)>,.* delay=([\d.]+),.*status=sent"
                    % re.escape(qid))
    return {m.group(1): float(m.group(2)) for m in map(rx.search, lines)
            if m and ("delays=" in m.string) == want_pipe}


# delay= counts from the arrival in Postfix's queue, as Postfix's own does
# (the agent reads it from the Received: field that names the queue id)
ours, pf = delays(log, False), delays(snd.log_lines(smark), True)
good &= ok(all(r in ours and r in pf and pf[r] - 1.0 <= ours[r] <= pf[r] + 1.5
               for r in D2),
           "second run: the agent's delay= counts the time in the queue, "
           "like pipe(8)'s (agent %r, pipe %r)"
           % ([ours.get(r) for r in D2], [pf.get(r) for r in D2]))
if not good:
    diag("\n".join(log))
    diag("\n".join(recv.log_lines(rmark)))
done()
