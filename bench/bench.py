#!/usr/bin/env python3
# bench.py - `make bench`: rapidretry measured against Postfix's own smtp
# client on this machine, in one run, with throw-away Postfix instances on
# loopback:
#  (a) first delivery attempt: 20/100 recipients over 2 domains to a
#      receiver with smtpd_recipient_limit = 3 and to one that takes one
#      domain per transaction (rapidretry-milter, domain mode)
#  (b) throughput to a sink: 1-recipient messages and 50-recipient messages
#      over 10 domains (10 server addresses), messages/s and transactions
#  (c) a receiving Postfix with and without rapidretry-milter, messages/s
#  (d) the agent's peak RSS for a 1 KB and a 50 MB message
#  (e) CPU time per delivery: Postfix's delivery processes (pipe(8) plus
#      the agents it ran, or smtp(8)), from (b)
#  (f) LMTP mode beside pipe mode and smtp(8), messages queued first and
#      the delivery timed alone; the journal disk's fdatasync latency
#      (bench/lmtp_bench.py)
# Prints a table and writes bench/results/bench-TIME.{csv,json}. Root.
import csv
import json
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))

if os.geteuid() != 0:
    sys.exit("make bench: run it as root (throw-away Postfix instances)")
if not os.environ.get("RR_BUILD"):
    sys.exit("make bench: RR_BUILD is not set; run it as `make bench`")

import rrtest                                          # noqa: E402
import rrmilter                                        # noqa: E402
import milter_bench                                    # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmtp_bench                                      # noqa: E402
from postfix import Receiver, Sender                   # noqa: E402

ROWS = []
QUICK = os.environ.get("RR_BENCH_QUICK") == "1"


def say(msg=""):
    print(msg, flush=True)


def row(part, case, metric, agent, smtp, unit, note=""):
    """row - one result: the agent's value and Postfix smtp's."""
    ratio = None
    if isinstance(agent, (int, float)) and isinstance(smtp, (int, float)) \
            and smtp:
        ratio = round(agent / smtp, 2)
    ROWS.append(dict(part=part, case=case, metric=metric, agent=agent,
                     smtp=smtp, ratio=ratio, unit=unit, note=note))


def submit_many(snd, msgs):
    """submit_many - sendmail each (sender, rcpts) without waiting."""
    for rcpts in msgs:
        p = subprocess.run(["sendmail", "-C", snd.etc, "-f", "b@src.test",
                            "--"] + rcpts, input=rrtest.sample_message(
                                "b@src.test", rcpts).encode(),
                           capture_output=True)
        if p.returncode:
            sys.exit("sendmail failed: %r" % p.stderr)


def count_status(snd, since, status=None):
    """count_status - delivery status lines in the sender's log."""
    rx = re.compile(r"\]: [0-9A-F]{6,}: to=<.*, status=%s"
                    % (status or r"(sent|deferred|bounced)"))
    return sum(1 for l in snd.log_lines(since) if rx.search(l))


def settle(recv, mark):
    """settle - wait until the receiver logged every disconnect."""
    rrtest.wait_until(lambda: recv.sessions(mark) and len(
        recv.sessions(mark)) >= recv.connections(mark), 15)


# --- (a) first delivery attempt ----------------------------------------------

def first_attempt(snd, recv, rcpts):
    """first_attempt - one message; delivered at the first attempt,
    time until every recipient had a status, transactions, connections."""
    mark_s, mark_r = snd.mark(), recv.mark()
    t0 = time.monotonic()
    submit_many(snd, [rcpts])
    rrtest.wait_until(lambda: count_status(snd, mark_s) >= len(rcpts), 90)
    wall = time.monotonic() - t0
    settle(recv, mark_r)
    return dict(sent=count_status(snd, mark_s, "sent"), wall=wall,
                tx=recv.transactions(mark_r),
                conns=recv.connections(mark_r))


def part_a():
    say("(a) first delivery attempt ...")
    milter = rrmilter.Milter(rrtest.subdir("milter-a"),
                             "[milter]\nmode = domain\n")
    if not milter.start():
        sys.exit("rapidretry-milter did not start: " + milter.read_log())
    lim = Receiver("a-limit3", domains=("d1.test", "d2.test"),
                   main={"smtpd_recipient_limit": "3",
                         "virtual_transport": "discard"}).start()
    one = Receiver("a-onedomain", domains=("d3.test", "d4.test"),
                   milter=milter.socket, main={
                       "smtpd_soft_error_limit": "300",
                       "smtpd_hard_error_limit": "300",
                       "virtual_transport": "discard"}).start()
    tdir = rrtest.tmpdir()
    recvs = (("d1.test", lim), ("d2.test", lim), ("d3.test", one),
             ("d4.test", one))
    amap = rrtest.write_file(os.path.join(tdir, "a-agent-map"), "".join(
        "%s rapidretry:[127.0.0.1]:%d\n" % (d, r.port) for d, r in recvs))
    asnd = Sender("a-send-agent", relay_port=lim.port, recipient_limit=100,
                  main={"transport_maps": "texthash:" + amap}).start()
    # Postfix queues per domain: two names of 127.0.0.1 stand for two
    # domains that share one MX
    pmap = rrtest.write_file(os.path.join(tdir, "a-smtp-map"), "".join(
        "%s smtp:[%s]:%d\n" % (d, "127.0.0.1" if i % 2 == 0 else
                               "localhost", r.port)
        for i, (d, r) in enumerate(recvs)))
    psnd = Sender("a-send-smtp", relay_port=lim.port, smtp=True,
                  main={"transport_maps": "texthash:" + pmap,
                        "relayhost": ""}).start()
    for name, recv, d1, d2 in (("limit 3", lim, "d1.test", "d2.test"),
                               ("one domain/txn", one, "d3.test",
                                "d4.test")):
        for n in (20, 100):
            rcpts = (["a%03d@%s" % (i, d1) for i in range(n // 2)]
                     + ["b%03d@%s" % (i, d2) for i in range(n // 2)])
            a = first_attempt(asnd, recv, rcpts)
            p = first_attempt(psnd, recv, rcpts)
            case = "%s, %d rcpts" % (name, n)
            row("a", case, "delivered at 1st attempt", a["sent"], p["sent"],
                "rcpts", "of %d" % n + ("; the rest waits >= 300 s"
                                        if min(a["sent"], p["sent"]) < n
                                        else ""))
            row("a", case, "time to 1st-attempt end",
                round(a["wall"], 2), round(p["wall"], 2), "s")
            row("a", case, "transactions", a["tx"], p["tx"], "")
            row("a", case, "connections", a["conns"], p["conns"], "")
    for inst in (asnd, psnd, lim, one):
        inst.stop()
    milter.stop()


# --- (b) throughput and (e) CPU ------------------------------------------------

def delivery_cpu(snd, names):
    """delivery_cpu - CPU seconds of the instance's delivery processes
    (comm in NAMES) and of the children they waited for."""
    master = snd.master_pid()
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        f = st[st.rindex(")") + 2:].split()
        if int(f[1]) == master and comm in names:
            total += sum(int(x) for x in f[11:15])  # utime stime cu cs
    return total / tck


def part_b():
    say("(b) throughput to a sink, (e) CPU per delivery ...")
    doms = ["s%d.test" % i for i in range(10)]
    sink = Receiver("b-sink", domains=doms,
                    main={"virtual_transport": "discard"})
    # ten server addresses on one smtpd: 127.0.0.2 .. 127.0.0.11
    sink.master_extra = "".join(
        "127.0.0.%d:%d inet n - n - - smtpd\n" % (i + 2, sink.port)
        for i in range(10))
    sink.start()
    routes = "".join("%s = relay:[127.0.0.%d]:%d\n" % (d, i + 2, sink.port)
                     for i, d in enumerate(doms))
    agent = rrtest.Agent(name="b-agent", relay="", deadline="120s",
                         extra_text="\n[routes]\n" + routes)
    asnd = Sender("b-send-agent", relay_port=sink.port, agent=agent,
                  transport="rapidretry:batch", main={
                      "rapidretry_destination_concurrency_limit": "20",
                      "initial_destination_concurrency": "20"}).start()
    pmap = rrtest.write_file(os.path.join(rrtest.tmpdir(), "b-smtp-map"),
                             "".join("%s smtp:[127.0.0.%d]:%d\n"
                                     % (d, i + 2, sink.port)
                                     for i, d in enumerate(doms)))
    psnd = Sender("b-send-smtp", relay_port=sink.port, smtp=True, main={
        "transport_maps": "texthash:" + pmap, "relayhost": "",
        "initial_destination_concurrency": "20"}).start()
    m1 = 40 if QUICK else 150
    m50 = 6 if QUICK else 20
    cases = (("1 rcpt", [["u%d@s%d.test" % (i, i % 10)] for i in range(m1)]),
             ("50 rcpts / 10 domains",
              [["u%d.%d@s%d.test" % (m, i, i % 10) for i in range(50)]
               for m in range(m50)]))
    for case, msgs in cases:
        res = {}
        for label, snd, names in (("agent", asnd, ("pipe",)),
                                  ("smtp", psnd, ("smtp",))):
            nrcpt = sum(len(m) for m in msgs)
            cpu0 = delivery_cpu(snd, names)
            mark_s, mark_r = snd.mark(), sink.mark()
            t0 = time.monotonic()
            submit_many(snd, msgs)
            rrtest.wait_until(lambda: count_status(snd, mark_s) >= nrcpt,
                              180, interval=0.2)
            wall = time.monotonic() - t0
            cpu = delivery_cpu(snd, names) - cpu0
            settle(sink, mark_r)
            res[label] = dict(rate=len(msgs) / wall,
                              sent=count_status(snd, mark_s, "sent"),
                              tx=sink.transactions(mark_r),
                              conns=sink.connections(mark_r),
                              cpu=cpu * 1000 / nrcpt, nrcpt=nrcpt)
        a, p = res["agent"], res["smtp"]
        row("b", case, "messages/s", round(a["rate"], 1),
            round(p["rate"], 1), "msg/s",
            "%d msgs, submission included" % len(msgs))
        row("b", case, "delivered", a["sent"], p["sent"], "rcpts")
        row("b", case, "transactions", a["tx"], p["tx"], "")
        row("b", case, "connections", a["conns"], p["conns"], "")
        row("e", case, "CPU per delivered rcpt", round(a["cpu"], 2),
            round(p["cpu"], 2), "ms",
            "agent: pipe(8) + agents; smtp: smtp(8)")
    for inst in (asnd, psnd, sink):
        inst.stop()


# --- (c) milter ----------------------------------------------------------------

def part_c():
    say("(c) receiving Postfix with and without rapidretry-milter ...")
    n = 150 if QUICK else 400
    without, e1 = milter_bench.run(False, n, 4)
    with_, e2 = milter_bench.run(True, n, 4)
    ROWS.append(dict(part="c", case="%d msgs, 4 clients" % n,
                     metric="smtpd msg/s, milter on / off",
                     agent=round(with_, 1), smtp=round(without, 1),
                     ratio=round(with_ / without, 2), unit="msg/s",
                     note="errors: %d / %d" % (len(e2), len(e1))))


# --- (d) RSS -------------------------------------------------------------------

def part_d():
    say("(d) agent peak RSS, 1 KB vs 50 MB ...")
    sink = Receiver("d-sink", domains=("d1.test",), main={
        "virtual_transport": "discard",
        "message_size_limit": "100000000"}).start()
    agent = rrtest.Agent(name="d-agent", relay="[127.0.0.1]:%d" % sink.port,
                         deadline="120s",
                         timeouts={"data_done_timeout": "60s"})
    out = {}
    for label, size in (("1 KB", 1024), ("50 MB", 50 * 1024 * 1024)):
        line = "x" * 75 + "\n"
        body = line * (size // len(line))
        msg = rrtest.sample_message("b@src.test", ["r@d1.test"], body=body)
        tf = os.path.join(agent.dir, "time.out")
        res = rrtest.run_as_user(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", tf, agent.binary,
             "-c", agent.conf, "-i", "D%dK" % (size // 1024), "-n",
             "[127.0.0.1]:%d" % sink.port, "-f", "b@src.test", "--",
             "r@d1.test"], msg, agent.env(), cwd=agent.dir, timeout=120)
        f = rrtest.read_file(tf).split()
        if res.rc != 0 or len(f) < 3:
            sys.exit("agent run for %s failed: %r %s" % (label, res,
                                                        rrtest.read_file(tf)))
        out[label] = (int(f[0]), float(f[1]) + float(f[2]), res.elapsed)
    ROWS.append(dict(part="d", case="agent, 1 recipient",
                     metric="peak RSS, 50 MB / 1 KB msg",
                     agent=out["50 MB"][0], smtp=out["1 KB"][0],
                     ratio=round(out["50 MB"][0] / out["1 KB"][0], 2),
                     unit="KB", note="/usr/bin/time %%M; 50 MB took %.1f s, "
                     "%.2f s CPU" % (out["50 MB"][2], out["50 MB"][1])))
    sink.stop()


# --- output --------------------------------------------------------------------

def table():
    """table - the rows, readable."""
    heads = {"a": "(a) first delivery attempt",
             "b": "(b) throughput through Postfix to a sink",
             "c": "(c) receiving Postfix: milter on (left) / off (right)",
             "d": "(d) rapidretry-agent memory: 50 MB (left) / 1 KB (right)",
             "e": "(e) CPU per delivered recipient",
             "f": "(f) LMTP mode (left) / smtp(8) (right), delivery alone"}
    fmt = "  %-25s %-27s %10s %8s %6s  %-5s %s"
    say()
    say(fmt % ("case", "metric", "rapidretry", "Postfix", "ratio", "unit",
               "note"))
    part = None
    for r in sorted(ROWS, key=lambda r: r["part"]):
        if r["part"] != part:
            part = r["part"]
            say(heads[part])
        say(fmt % (r["case"], r["metric"], r["agent"], r["smtp"],
                   "" if r["ratio"] is None else r["ratio"], r["unit"],
                   r["note"]))


def write_results():
    """write_results - CSV and JSON under bench/results/."""
    d = os.path.join(TOP, "bench", "results")
    os.makedirs(d, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = dict(time=stamp, cpus=os.cpu_count(),
                kernel=os.uname().release, quick=QUICK)
    base = os.path.join(d, "bench-" + stamp)
    with open(base + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=ROWS), f, indent=1)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0].keys()))
        w.writeheader()
        w.writerows(ROWS)
    say()
    say("written: %s.csv, %s.json" % (base, base))


def main():
    t0 = time.monotonic()
    say("rapidretry bench: rapidretry-agent vs Postfix's smtp client, "
        "loopback, %d CPUs" % os.cpu_count())
    part_a()
    part_b()
    part_c()
    part_d()
    lmtp_bench.part_f(row, say)
    table()
    write_results()
    say("took %.0f s" % (time.monotonic() - t0))
    rrtest._done = True


if __name__ == "__main__":
    main()
