#!/usr/bin/env python3
# 28-agent-huge-reply.t - a hostile server's replies are capped in what
# the agent keeps: RCPT replies of 200 lines x 60 KB for
# 5 recipients, accepted and rapid ones, and replies of 1 MB lines. Every
# recipient is delivered exactly once, the RapidRetry rounds still work
# on the capped replies, the agent's peak RSS stays small (measured on the
# agent process itself with getrusage), the cap is logged once per
# connection, and no log line carries more than a few KiB of server text.
import os
import resource
import sys
import tempfile
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

LINES, WIDTH = 200, 60 * 1000
RSS_MAX_KB = 20 * 1024
# ASan's shadow memory and quarantine make RSS meaningless there
CHECK_RSS = not rrtest.ASAN


def huge(first):
    """huge - a reply of LINES lines of WIDTH octets, FIRST's code."""
    fill = "x" * WIDTH
    return [first + " " + fill] * (LINES - 1) + [first + " end"]


# the rusage of the agent alone: a small wrapper waits for it
WRAP = ("import resource, subprocess, sys\n"
        "rc = subprocess.call(sys.argv[2:])\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "open(sys.argv[1], 'w').write('%d' % r.ru_maxrss)\n"
        "sys.exit(rc)\n")

agent = rrtest.Agent(deadline="60s", timeouts={"rcpt_timeout": "30s"})
rcpts = ["big%d@d1.test" % i for i in range(1, 6)]


def measured_run(script, qid):
    """measured_run - one agent run against a sink with SCRIPT: (sink,
    result, the agent's peak RSS in KiB, its log lines)."""
    sink = SmtpSink(script)
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    fd, rss_file = tempfile.mkstemp(prefix="rr-rss-")
    os.close(fd)
    os.chmod(rss_file, 0o666)
    mark = len(agent.log_lines())
    args = ["-c", agent.conf, "-i", qid, "-n", "[127.0.0.1]:%d" % port,
            "-f", "sender@src.test", "--"] + rcpts
    res = rrtest.run_as_user(["/usr/bin/python3", "-c", WRAP, rss_file,
                              agent.binary] + args,
                             rrtest.sample_message("sender@src.test", rcpts),
                             agent.env(), cwd=agent.dir, timeout=120)
    rss_kb = int(rrtest.read_file(rss_file) or "0")
    os.unlink(rss_file)
    return sink, res, rss_kb, agent.log_lines()[mark:]


def finish(good, res, rss_kb, run_log):
    """finish - the peak RSS check (not under ASan) and, when anything
    failed, the run's result and log."""
    if CHECK_RSS:
        good &= ok(0 < rss_kb < RSS_MAX_KB, "agent peak RSS %d KiB < %d KiB"
                   % (rss_kb, RSS_MAX_KB))
    if not good:
        diag(repr(res))
        diag("\n".join(l[:300] for l in run_log))


# the same delivery with ordinary replies, for comparison
_, res0, rss0_kb, _ = measured_run(
    {"rules": [{"cmd": "RCPT", "rcpt": "3+",
                "reply": "452 4.5.3 too many recipients"}]}, "28B16A0")
is_(res0.rc, 0, "ordinary replies: exit 0")
diag("agent peak RSS with ordinary replies: %d KiB" % rss0_kb)

qid = "28B16A1"
sink, res, rss_kb, run_log = measured_run({"rules": [
    {"cmd": "RCPT", "rcpt": [1, 2], "reply": huge("250 2.1.5")},
    {"cmd": "RCPT", "rcpt": "3+", "reply": huge("452 4.5.3")},
]}, qid)
log = [l for l in run_log if qid in l]

good = is_(res.rc, 0, "huge RCPT replies: exit 0")
good &= ok(rrtest.status_line_ok(res), "one stdout line, stderr empty")
good &= is_(sink.delivered(), rcpts, "all 5 delivered, each exactly once")
good &= is_([len(t[1]) for t in sink.transactions()], [5, 2, 1],
            "the rapid replies (452 4.5.3, capped) still drove the rounds")
st = rrtest.agent_status(log)
good &= is_(sorted((r, s) for q, r, d, s, t in st),
            [(r, "sent") for r in rcpts], "one 'sent' log line each")
capped = [l for l in log if "said once per connection" in l]
good &= is_(len(capped), 1, "the cap is logged once for the connection")
diag(capped[0] if capped else "no cap line")
good &= like(capped[0] if capped else "", r"sent a reply of 200 lines, "
             r"\d+ octets to RCPT TO; kept \d+ lines",
             "the cap's log line says what was sent and what was kept")
longest = max(len(l) for l in run_log) if run_log else 0
good &= ok(longest < 8192, "no log line over 8 KiB (longest %d)" % longest)
diag("agent peak RSS %d KiB (%d replies of %d lines x %d octets)"
     % (rss_kb, len(sink.commands("RCPT")), LINES, WIDTH))
finish(good, res, rss_kb, run_log)

# --- lines longer than the 64 KiB held of one: read and dropped too ------
qid = "28B16A2"
one_mb = "y" * (1024 * 1024)
sink, res, rss_kb, run_log = measured_run({"rules": [
    {"cmd": "RCPT", "rcpt": 1, "reply": ["250-2.1.5 " + one_mb,
                                         "250 2.1.5 Ok " + one_mb]},
    {"cmd": "RCPT", "rcpt": "2+", "reply": "452 4.5.3 " + one_mb},
]}, qid)
log = [l for l in run_log if qid in l]
good = is_(res.rc, 0, "1 MB reply lines: exit 0 (before: a protocol "
           "error, all deferred)")
good &= is_(sink.delivered(), rcpts, "all 5 delivered, each exactly once")
good &= is_([len(t[1]) for t in sink.transactions()], [5, 1, 1, 1, 1],
            "a 1 MB 452 4.5.3 line is still rapid (limit 1 learned)")
capped = [l for l in log if "said once per connection" in l]
good &= like(capped[0] if capped else "", r"sent a reply of 2 lines, "
             r"20971\d\d octets to RCPT TO; kept 2 lines",
             "the cap counts the dropped octets of the long lines")
good &= ok(max(len(l) for l in run_log) < 8192, "no log line over 8 KiB")
finish(good, res, rss_kb, run_log)

done()
