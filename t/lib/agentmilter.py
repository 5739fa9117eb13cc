"""agentmilter - helpers for the end-to-end tests sender Postfix ->
rapidretry-agent -> receiver Postfix with rapidretry-milter (t/43, t/44):
the milter in its own directory, mode changes by SIGHUP, one message
through the agent with the receiver's view of it, and TODO test points.
"""

import collections
import os
import re

import rrtest
from rrtest import ok, is_, diag
from postfix import Receiver
import rrmilter


def need_milter():
    """need_milter - skip the file when the milter is not built."""
    rrmilter.binary()


def todo(cond, name, why):
    """todo - a TAP test point marked TODO: a known bug, reported but not
    failing the suite (prove shows it as "TODO passed" once fixed)."""
    rrtest._count += 1
    print("%s %d - %s # TODO %s" % ("ok" if cond else "not ok",
                                    rrtest._count, name.replace("#", "\\#"),
                                    why), flush=True)
    return bool(cond)


def milter_conf(mode, classes_path):
    return "[milter]\nmode = %s\nclass_map = %s\n" % (mode, classes_path)


def start_milter(name, mode, classes="default other\n"):
    """start_milter - rapidretry-milter in the foreground in its own
    directory, stopped (SIGTERM) at exit."""
    d = rrtest.subdir(name)
    m = rrmilter.Milter(d, milter_conf(mode, os.path.join(d, "classes")),
                        classes)
    if not m.start():
        diag(m.read_log())
        m.kill()
        rrtest.bail("rapidretry-milter does not start")
    return m


def reload_milter(m, mode, classes="default other\n"):
    """reload_milter - new mode and class map by SIGHUP; True once the
    milter logged the reload."""
    return m.reload(milter_conf(mode, os.path.join(m.dir, "classes")),
                    classes=classes)


def milter_receiver(name, milter, domains, main=None):
    """milter_receiver - a started Receiver whose smtpd uses MILTER, with
    main.cf.example's receiving-side settings updated by MAIN."""
    return Receiver(name, domains=domains, milter=milter.socket,
                    main=main).start()


def sanitizer_free(m):
    """sanitizer_free - no ASan/UBSan report in the milter's output."""
    return m.sanitizer_free()


def pipe_seconds(snd, qid):
    """pipe_seconds - the transmission part of pipe(8)'s delays=a/b/c/d
    for QID: the agent's wall time as Postfix measured it."""
    rx = re.compile(r": %s: to=<[^>]*>,.* delays=[\d.]+/[\d.]+/[\d.]+/"
                    r"([\d.]+),.* status=" % re.escape(qid))
    for line in snd.log_lines():
        m = rx.search(line)
        if m:
            return float(m.group(1))
    return None


def _new_files(recv, before):
    return sorted((collections.Counter(recv.delivered()) - before).elements())


def agent_case(recv, snd, label, rcpts, want_tx, want_conn=1, timeout=45):
    """agent_case - one message to RCPTS through the agent; checks every
    recipient delivered once, the sender queue empty, one agent run,
    WANT_CONN connections, WANT_TX transactions of equal size. Returns a
    dict of what was seen (sessions, seconds, learned, agent lines)."""
    rmark = recv.mark()
    before = collections.Counter(recv.delivered())
    alog = len(snd.agent_log())
    qid = snd.submit("s@src.test", rcpts)
    ok(qid, "%s: message queued at the sender: %s" % (label, qid))
    st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= len(rcpts)
                           and snd.statuses(qid), timeout,
                           what="%d statuses from pipe(8)" % len(rcpts))
    rrtest.wait_until(lambda: len(recv.sessions(rmark))
                      >= recv.connections(rmark) > 0, 10,
                      what="receiver disconnect")
    rrtest.wait_until(snd.queue_empty, 10, what="empty sender queue")
    rrtest.wait_until(lambda: len(_new_files(recv, before)) >= len(rcpts),
                      10, what="Maildir files")
    new = _new_files(recv, before)
    alines = snd.agent_log()[alog:]
    seen = {"sessions": recv.sessions(rmark),
            "seconds": pipe_seconds(snd, qid),
            "learned": [l.split(": learned ", 1)[1] for l in alines
                        if ": learned " in l],
            "agent": alines, "statuses": st or [],
            "receiver": recv.log_lines(rmark)}
    per = len(rcpts) // max(want_tx, 1)

    good = is_(new, sorted(r.lower() for r in rcpts),
               "%s: each of the %d recipients exactly once in the Maildir"
               % (label, len(rcpts)))
    good &= is_([s for r, d, s, t in st or []], ["sent"] * len(rcpts),
                "%s: pipe(8) logged status=sent for all" % label)
    good &= ok(snd.queue_empty(), "%s: the sender's queue is empty" % label)
    good &= is_(len(rrtest.agent_pids(alines)), 1,
                "%s: one agent invocation" % label)
    good &= is_(recv.connections(rmark), want_conn,
                "%s: the receiver saw %d connection(s)" % (label, want_conn))
    good &= is_(recv.transactions(rmark), want_tx,
                "%s: the receiver saw %d transactions" % (label, want_tx))
    good &= is_(sorted(recv.nrcpts(rmark)), [per] * want_tx,
                "%s: %d messages of %d recipient(s) each"
                % (label, want_tx, per))
    diag("%s: agent wall time %s s (pipe(8) delays), sessions %r, "
         "learned %r" % (label, seen["seconds"], seen["sessions"],
                         seen["learned"]))
    for l in alines:
        if "batch done" in l:
            diag("%s: %s" % (label, l.split(": ", 2)[-1]))
    if not good:
        diag("\n".join(alines))
        diag("\n".join(seen["receiver"][-40:]))
    return seen
