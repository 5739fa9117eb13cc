#!/usr/bin/env python3
# demo.py - `make demo`: what rapidretry does, in a minute, on loopback.
# Throw-away Postfix instances: senders whose mail goes through
# rapidretry-agent in LMTP mode (Postfix's lmtp client -> spawn(8) ->
# rapidretry-agent --lmtp, the way to carry all outgoing mail), a sender
# that runs it through pipe(8), a sender that uses Postfix's own smtp client,
# a receiver with smtpd_recipient_limit = 3 and a receiver with
# rapidretry-milter in strict mode. One message to 20 recipients (two
# domains) goes to each receiver from each sender; the report compares
# the first delivery attempts. Logs are kept under a printed directory;
# every process is stopped at the end. Needs root and RR_BUILD.
import os
import re
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))

if os.geteuid() != 0:
    sys.exit("make demo: run it as root (it starts throw-away Postfix "
             "instances on 127.0.0.1)")
if not os.environ.get("RR_BUILD"):
    sys.exit("make demo: RR_BUILD is not set; run it as `make demo`")

import rrtest                                          # noqa: E402
import rrmilter                                        # noqa: E402
from postfix import Receiver, Sender                   # noqa: E402
from lmtpsender import LmtpSender                      # noqa: E402

N = 20
TIMEOUT = 60
LOGS = tempfile.mkdtemp(prefix="rapidretry-demo.")
os.chmod(LOGS, 0o755)


def say(msg=""):
    print(msg, flush=True)


def rcpts_for(d1, d2):
    """rcpts_for - 10 recipients in each of two domains."""
    return (["a%02d@%s" % (i, d1) for i in range(1, N // 2 + 1)]
            + ["b%02d@%s" % (i, d2) for i in range(1, N // 2 + 1)])


def first_attempt(snd, qid):
    """first_attempt - the first status Postfix logged per recipient."""
    def got():
        st = snd.statuses(qid)
        return st if len({r for r, d, s, t in st}) >= N else None
    st = rrtest.wait_until(got, TIMEOUT, what="statuses of %s" % qid) or []
    first = {}
    for r, d, s, t in st:
        first.setdefault(r.lower(), (s, t))
    return first


def run(snd, recv, rcpts, label):
    """run - one message from SND to RECV; the numbers of its first
    delivery attempt."""
    mark = recv.mark()
    t0 = time.monotonic()
    qid = snd.submit("demo@src.test", rcpts)
    first = first_attempt(snd, qid)
    wall = time.monotonic() - t0
    # the receiver logs its counters when the client disconnects
    rrtest.wait_until(lambda: recv.sessions(mark) and len(
        recv.sessions(mark)) >= recv.connections(mark), 15)
    sent = sum(1 for s, t in first.values() if s == "sent")
    deferred = [t for s, t in first.values() if s == "deferred"]
    return dict(label=label, qid=qid, sent=sent, deferred=len(deferred),
                reason=deferred[0] if deferred else "",
                connections=recv.connections(mark),
                transactions=recv.transactions(mark), wall=wall)


def main():
    say("rapidretry demo: one message to %d recipients (10 @ each of two "
        "domains) per receiver," % N)
    say("first through rapidretry-agent in LMTP mode (behind Postfix's lmtp "
        "client), then in")
    say("pipe(8) mode, then through Postfix's own smtp client. Loopback "
        "only.")
    say()
    say("starting throw-away Postfix instances and rapidretry-milter ...")
    lim = Receiver("recv-limit3", domains=("d1.test", "d2.test"),
                   main={"smtpd_recipient_limit": "3"}).start()
    mdir = rrtest.subdir("milter")
    milter = rrmilter.Milter(mdir, "[milter]\nmode = strict\n")
    if not milter.start():
        sys.exit("rapidretry-milter did not start:\n" + milter.read_log())
    # smtpd_milters and the receiving side of main.cf.example
    mil = Receiver("recv-milter", domains=("d3.test", "d4.test"),
                   milter=milter.socket).start()

    # Senders 0: all mail through the agent in LMTP mode
    # (default_transport, master.cf.example's services), one per receiver:
    # the agent's own relay setting points at it
    lsnd = {r.port: LmtpSender("send-lmtp%d" % i, relay_port=r.port,
                               main={"transport_maps":
                                     "inline:{src.test=discard:}"}).start()
            for i, r in enumerate((lim, mil))}
    # Sender 1: everything through the agent. Both domains of a receiver
    # share one nexthop, so Postfix gives the agent all 20 in one batch.
    tdir = rrtest.tmpdir()
    amap = rrtest.write_file(os.path.join(tdir, "agent-transport"), "".join(
        "%s rapidretry:[127.0.0.1]:%d\n" % (d, r.port)
        for d, r in (("d1.test", lim), ("d2.test", lim), ("d3.test", mil),
                     ("d4.test", mil))))
    asnd = Sender("send-agent", relay_port=lim.port,
                  main={"transport_maps": "texthash:" + amap}).start()
    # Sender 2: Postfix's smtp client. Postfix queues per domain; two
    # domains that share one MX are emulated by two names of 127.0.0.1.
    pmap = rrtest.write_file(os.path.join(tdir, "smtp-transport"), "".join(
        "%s smtp:[%s]:%d\n" % (d, h, r.port)
        for d, h, r in (("d1.test", "127.0.0.1", lim),
                        ("d2.test", "localhost", lim),
                        ("d3.test", "127.0.0.1", mil),
                        ("d4.test", "localhost", mil))))
    psnd = Sender("send-smtp", relay_port=lim.port, smtp=True,
                  main={"transport_maps": "texthash:" + pmap,
                        "relayhost": ""}).start()

    results = []
    for recv, name, d1, d2 in ((lim, "Postfix smtpd_recipient_limit = 3",
                                "d1.test", "d2.test"),
                               (mil, "Postfix + rapidretry-milter (strict)",
                                "d3.test", "d4.test")):
        rcpts = rcpts_for(d1, d2)
        lm = run(lsnd[recv.port], recv, rcpts, "agent, LMTP mode")
        a = run(asnd, recv, rcpts, "agent, pipe(8)")
        p = run(psnd, recv, rcpts, "Postfix smtp")
        results.append((name, recv, (lm, a, p)))

    report(results, asnd, psnd, milter, lsnd[lim.port])
    keep_logs(asnd, psnd, lim, mil, milter, lsnd[lim.port])
    say("stopping the instances ...")
    rrtest._done = True
    rrtest._run_cleanups()      # stop Postfix and the milter, remove tmp
    guide()


def report(results, asnd, psnd, milter, lsnd):
    """report - the table, then the key log lines."""
    say()
    fmt = "%-6s %-19s %13s %6s %5s %8s  %s"
    for name, recv, rows in results:
        p = rows[-1]
        say("receiver: %s" % name)
        say(fmt % ("", "sender", "1st delivery", "conns", "txns", "time",
                   "the rest"))
        for r in rows:
            rest = ("-" if r["deferred"] == 0 else
                    "%d deferred, next try after >= 300 s" % r["deferred"])
            say(fmt % ("", r["label"], "%d/%d" % (r["sent"], N),
                       r["connections"], r["transactions"],
                       "%.1f s" % r["wall"], rest))
        if p["reason"]:
            say("%10s Postfix smtp deferred with: %s"
                % ("", p["reason"][:90]))
        say()
    lines = [l for l in lsnd.log_lines() if re.search(
        r"/lmtp\[\d+\]: \w+: to=<.*status=sent", l)]
    say("LMTP mode: Postfix's own line per recipient (%d status=sent at "
        "the first attempt; %s):" % (len(lines), os.path.join(
            LOGS, "send-lmtp-maillog")))
    for l in lines[:3]:
        l = re.sub(r"^\w{3} [ \d]\d [\d:]{8} \S+ \S+: ", "", l)
        say("  " + re.sub(r" delays=\S+", "", l)[:150])
    say()
    alog = asnd.agent_log()
    say("key lines of the agent's log (%s):" % os.path.join(
        LOGS, "send-agent-agent.log"))
    picks = ([l for l in alog if "rapid retry:" in l][:2]
             + [l for l in alog if "learned" in l][:1]
             + [l for l in alog if "batch done:" in l])
    for l in picks:
        say("  " + re.sub(r"^\w{3} [ \d]\d [\d:]{8} \S+ ", "", l)[:150])
    say()


def keep_logs(asnd, psnd, lim, mil, milter, lsnd):
    """keep_logs - copy every log into LOGS (the rest is removed)."""
    files = {"send-lmtp-maillog": lsnd.maillog,
             "send-lmtp-agent.log": lsnd.agent.log_file,"send-agent-agent.log": asnd.agent.log_file,
             "send-agent-maillog": asnd.maillog,
             "send-smtp-maillog": psnd.maillog,
             "recv-limit3-maillog": lim.maillog,
             "recv-milter-maillog": mil.maillog,
             "milter.log": milter.log}
    for name, src in files.items():
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(LOGS, name))
            os.chmod(os.path.join(LOGS, name), 0o644)


def guide():
    """guide - where to look."""
    say("logs: %s/" % LOGS)
    say("  send-lmtp-maillog      the LMTP-mode sender: Postfix's lmtp "
        "client logs each recipient")
    say("                         (relay=rapidretry-lmtp, status=sent, the "
        "receiver's reply)")
    say("  send-agent-agent.log   the agent: one line per recipient "
        "(to=<...>, relay=..., dsn=..., status=...),")
    say("                         rapid retry:, learned limit, batch done:")
    say("  send-agent-maillog     the sending Postfix (pipe(8): "
        "relay=rapidretry)")
    say("  send-smtp-maillog      the same message through Postfix's smtp "
        "client (status=deferred)")
    say("  recv-*-maillog         the receivers (smtpd: disconnect from ... "
        "mail=N rcpt=A/B)")
    say("  milter.log             rapidretry-milter (accepted=, deferred=)")
    say("All instances are stopped; nothing keeps running. "
        "Remove the logs with: rm -r %s" % LOGS)


if __name__ == "__main__":
    main()
