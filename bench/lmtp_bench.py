"""lmtp_bench - `make bench` part (h): delivery rate of LMTP mode beside
pipe mode and Postfix's own smtp(8), in one run, to one unlimited sink:
the messages are queued first (defer_transports), then released, and only
the delivery is timed. Cases: 1-recipient messages, and 10-recipient
messages over 10 domains that share one server. Also the journal's
fdatasync latency on the disk the tests use.

The shared server: for rapidretry every domain routes to the same
[127.0.0.1]:port, as domains with one MX do. Postfix queues and delivers
per domain (its nexthop) whatever the MX, so its smtp(8) gets one nexthop
per domain: ten ports of the same sink (its connection cache cannot
share a connection between them, which on one real MX it could).
"""

import os
import statistics
import subprocess
import time

import rrtest
from postfix import Receiver, Sender
from lmtpsender import LmtpSender

QUICK = os.environ.get("RR_BENCH_QUICK") == "1"
DOMS = ["m%d.test" % i for i in range(10)]


def fsync_latency(directory, n=50):
    """fsync_latency - median ms of write + fdatasync of 4 KiB there."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            times.append((time.monotonic() - t0) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times)


def queue_then_deliver(snd, sink, msgs):
    """queue_then_deliver - submit MSGS while delivery is held, release
    it, and time the delivery alone; (seconds, sent, transactions)."""
    nrcpt = sum(len(m) for m in msgs)
    mark = snd.mark()
    for rcpts in msgs:
        subprocess.run(["sendmail", "-C", snd.etc, "-f", "b@src.test", "--"]
                       + rcpts, input=rrtest.sample_message(
                           "b@src.test", rcpts).encode(), check=True)
    rrtest.wait_until(lambda: len(snd.queue_json()) >= len(msgs)
                      and _held(snd, mark) >= nrcpt, 120, interval=0.2)
    snd.main["defer_transports"] = ""
    mark_s, mark_r = snd.mark(), sink.mark()
    snd.reload()
    t0 = time.monotonic()
    snd.flush()
    rrtest.wait_until(lambda: _count(snd, mark_s, "sent") >= nrcpt, 300,
                      interval=0.1)
    wall = time.monotonic() - t0
    rrtest.wait_until(lambda: sink.sessions(mark_r) and
                      len(sink.sessions(mark_r)) >= sink.connections(mark_r),
                      20)
    return wall, _count(snd, mark_s, "sent"), sink.transactions(mark_r)


def _held(snd, since):
    return len([l for l in snd.log_lines(since)
                if "status=deferred (deferred transport)" in l])


def _count(snd, since, status):
    return len([l for l in snd.log_lines(since)
                if " status=%s " % status in l])


def part_h(row, say):
    """part_h - the rows of (h) through ROW(part, case, metric, agent,
    smtp, unit, note)."""
    say("(h) LMTP mode, pipe mode and Postfix smtp(8): delivery alone ...")
    sink = Receiver("f-sink", domains=DOMS,
                    main={"virtual_transport": "discard"})
    ports = [sink.port] + [rrtest.free_port() for _ in DOMS[1:]]
    sink.master_extra = "".join("127.0.0.1:%d inet n - n - - smtpd\n" % p
                                for p in ports[1:])
    sink.start()
    routes = "".join("%s = relay:[127.0.0.1]:%d\n" % (d, sink.port)
                     for d in DOMS)
    held = {"defer_transports": "smtp rapidretry",
            "initial_destination_concurrency": "20"}

    def agent(name):
        return rrtest.Agent(name=name, relay="", deadline="120s",
                            extra_text="\n[routes]\n" + routes)
    lagent = agent("f-lmtp/agent")
    pagent = agent("f-pipe/agent")
    tmap = rrtest.write_file(os.path.join(rrtest.tmpdir(), "f-smtp-map"),
                             "".join("%s smtp:[127.0.0.1]:%d\n" % (d, p)
                                     for d, p in zip(DOMS, ports)))
    senders = {
        "lmtp": lambda: LmtpSender("f-lmtp", agent=lagent, main=dict(
            held, rapidretry_destination_concurrency_limit="20")),
        "pipe": lambda: Sender("f-pipe", relay_port=sink.port, agent=pagent,
                               transport="rapidretry:batch", main=dict(
                                   held,
                                   rapidretry_destination_concurrency_limit=
                                   "20")),
        "smtp": lambda: Sender("f-smtp", relay_port=sink.port, smtp=True,
                               main=dict(held, transport_maps="texthash:"
                                         + tmap, relayhost="")),
    }
    m1 = 60 if QUICK else 200
    m10 = 15 if QUICK else 50
    cases = (("1 rcpt", [["u%d@%s" % (i, DOMS[i % 10])] for i in range(m1)]),
             ("10 rcpts / 10 domains, 1 MX",
              [["u%d.%d@%s" % (m, i, d) for i, d in enumerate(DOMS)]
               for m in range(m10)]))
    for case, msgs in cases:
        res = {}
        for mode, make in senders.items():
            snd = make().start()
            wall, sent, tx = queue_then_deliver(snd, sink, msgs)
            res[mode] = dict(rate=len(msgs) / wall, sent=sent, tx=tx)
            snd.stop()
        lm, pi, sm = res["lmtp"], res["pipe"], res["smtp"]
        n = sum(len(m) for m in msgs)
        row("h", case, "LMTP mode, messages/s", round(lm["rate"], 1),
            round(sm["rate"], 1), "msg/s",
            "%d msgs queued first, delivery alone" % len(msgs))
        row("h", case, "pipe mode, messages/s", round(pi["rate"], 1),
            round(sm["rate"], 1), "msg/s", "same run")
        row("h", case, "LMTP mode, delivered", lm["sent"], sm["sent"],
            "rcpts", "of %d; pipe mode %d" % (n, pi["sent"]))
        row("h", case, "LMTP mode, transactions", lm["tx"], sm["tx"], "",
            "pipe mode %d" % pi["tx"])
    row("h", "journal disk", "fdatasync 4 KiB, median",
        round(fsync_latency(lagent.journal_dir), 2), None, "ms",
        "the journal's directory")
    sink.stop()
