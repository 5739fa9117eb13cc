#!/usr/bin/env python3
# bench.py - `make bench`: rapidretry measured against Postfix's own smtp
# client on this machine, in one run, with throw-away Postfix instances on
# loopback:
#  (a) first delivery attempt: 20/100 recipients over 2 domains to a
#      receiver with smtpd_recipient_limit = 3 and to one that takes one
#      domain per transaction (rapidretry-milter, domain mode)
#  (b) throughput to a sink with every message queued first (held, then
#      released: delivery alone is timed): 1, 10 and 50 recipients per
#      message over 10 domains (10 server addresses); the agent, smtp(8)
#      and the ceiling of any pipe(8) transport, pipe(8) + /bin/true
#  (c) a receiving Postfix without rapidretry-milter and with it over a UNIX
#      socket and over TCP, messages/s (t/lib/milter_bench.py)
#  (d) the agent's peak RSS for a 1 KB and a 50 MB message
#  (e) CPU time per delivery: Postfix's delivery processes (pipe(8) plus
#      the agents it ran, or smtp(8)), from (b)
#  (f) CPU of one agent run vs /bin/true, both started as sh -c 'exec ...',
#      medians of 250 runs each, servers with and without STARTTLS
#  (g) 20 agents at once, 2,000 messages, one journal: deferred,
#      duplicated, lost; journal and WAL sizes
#  (h) LMTP mode beside pipe mode and smtp(8), messages queued first and
#      the delivery timed alone; the journal disk's fdatasync latency
#      (bench/lmtp_bench.py)
#  (i) destination scheduling's state per session, and the same loop with
#      scheduling off (bench/sched_bench.c)
#  (j) CPU per message to Postfix's smtp-sink, three ways: smtp(8), LMTP
#      mode (journal synced and not), and the ceiling of any LMTP-mode
#      agent, lmtp(8) to smtp-sink -L (bench/cpu_bench.py)
# Prints a table and writes bench/results/bench-TIME.{csv,json}. Root.
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
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
import tlsca                                           # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmtp_bench                                      # noqa: E402
import cpu_bench                                       # noqa: E402
from postfix import Receiver, Sender                   # noqa: E402

ROWS = []
QUICK = os.environ.get("RR_BENCH_QUICK") == "1"
PARTS = os.environ.get("RR_BENCH_PARTS", "abcdefghij")  # e.g. "bf": some only


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


def submit_many(snd, msgs, subject="rapidretry test"):
    """submit_many - sendmail each (sender, rcpts) without waiting."""
    for rcpts in msgs:
        p = subprocess.run(["sendmail", "-C", snd.etc, "-f", "b@src.test",
                            "--"] + rcpts, input=rrtest.sample_message(
                                "b@src.test", rcpts,
                                subject=subject).encode(),
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
#
# Every message goes through pickup and cleanup into the queue first: a
# header_checks HOLD puts it on hold; once all are held, `postsuper -H ALL`
# and `postqueue -f` release them and the clock starts. So the rows time
# delivery alone, not submission. Three senders in the same run, Postfix
# defaults apart from the transport: smtp(8); pipe(8) running the agent
# (rapidretry:batch, its default configuration: delivery log on,
# security_level may); pipe(8) running /bin/true in the agent's place,
# the ceiling for any pipe(8) transport (pipe(8) and the process start
# cost the same there, the work is nothing).

HOLD = "/^Subject: bench /  HOLD\n"


def delivery_cpu(snd, names):
    """delivery_cpu - CPU seconds of the instance's delivery processes
    (comm in NAMES) and of the children they waited for (pipe(8)'s
    commands: the agents, /bin/true)."""
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


def held(snd):
    """held - messages in the hold queue."""
    return sum(1 for m in snd.queue_json() if m.get("queue_name") == "hold")


def postsuper(snd, *args):
    subprocess.run(["postsuper", "-c", snd.etc] + list(args),
                   capture_output=True)


def queue_first(snd, msgs, names, sink):
    """queue_first - submit MSGS (held), then release and time delivery
    until every recipient has a status; returns a dict of figures."""
    nrcpt = sum(len(m) for m in msgs)
    submit_many(snd, msgs, subject="bench ")
    if not rrtest.wait_until(lambda: held(snd) >= len(msgs), 120,
                             interval=0.2):
        sys.exit("%s: only %d of %d messages held" % (snd.name, held(snd),
                                                      len(msgs)))
    mark_s, mark_r = snd.mark(), sink.mark()
    cpu0 = delivery_cpu(snd, names)
    t0 = time.monotonic()
    postsuper(snd, "-H", "ALL")
    snd.flush()
    rrtest.wait_until(lambda: count_status(snd, mark_s) >= nrcpt, 300,
                      interval=0.1)
    wall = time.monotonic() - t0
    cpu = delivery_cpu(snd, names) - cpu0
    settle(sink, mark_r)
    return dict(rate=len(msgs) / wall, wall=wall, nrcpt=nrcpt,
                sent=count_status(snd, mark_s, "sent"),
                deferred=count_status(snd, mark_s, "deferred"),
                tx=sink.transactions(mark_r), conns=sink.connections(mark_r),
                cpu=cpu * 1000 / nrcpt)


def part_b():
    say("(b) throughput to a sink, queue first; (e) CPU per delivery ...")
    doms = ["s%d.test" % i for i in range(10)]
    sink = Receiver("b-sink", domains=doms,
                    main={"virtual_transport": "discard"})
    # ten server addresses on one smtpd: 127.0.0.2 .. 127.0.0.11
    sink.master_extra = "".join(
        "127.0.0.%d:%d inet n - n - - smtpd\n" % (i + 2, sink.port)
        for i in range(10))
    sink.start()
    hold = rrtest.write_file(os.path.join(rrtest.tmpdir(), "b-hold"), HOLD)
    checks = {"header_checks": "regexp:" + hold}
    routes = "".join("%s = relay:[127.0.0.%d]:%d\n" % (d, i + 2, sink.port)
                     for i, d in enumerate(doms))
    agent = rrtest.Agent(name="b-agent", relay="", deadline="120s",
                         extra_text="\n[routes]\n" + routes)
    conc = {"initial_destination_concurrency": "20"}
    asnd = Sender("b-send-agent", relay_port=sink.port, agent=agent,
                  transport="rapidretry:batch", main=dict(checks, **conc, **{
                      "rapidretry_destination_concurrency_limit": "20"}))
    tsnd = Sender("b-send-true", relay_port=sink.port, main=dict(
        checks, **conc, **{
            "default_transport": "truecmd:batch",
            "truecmd_destination_concurrency_limit": "20",
            "truecmd_destination_recipient_limit": "50"}))
    tsnd.master_extra += ("truecmd unix - n n - 50 pipe flags=q "
                          "null_sender= user=%s argv=/bin/true -i "
                          "${queue_id} -f ${sender} -- ${recipient}\n"
                          % rrtest.TEST_USER)
    pmap = rrtest.write_file(os.path.join(rrtest.tmpdir(), "b-smtp-map"),
                             "".join("%s smtp:[127.0.0.%d]:%d\n"
                                     % (d, i + 2, sink.port)
                                     for i, d in enumerate(doms)))
    psnd = Sender("b-send-smtp", relay_port=sink.port, smtp=True,
                  main=dict(checks, **conc, **{
                      "transport_maps": "texthash:" + pmap,
                      "relayhost": ""}))
    for snd in (asnd, tsnd, psnd):
        snd.start()
    scale = 0.25 if QUICK else 1
    cases = (("1 rcpt", [["u%d@s%d.test" % (i, i % 10)]
                         for i in range(int(200 * scale))]),
             ("10 rcpts / 10 domains",
              [["u%d.%d@s%d.test" % (m, i, i) for i in range(10)]
               for m in range(int(60 * scale))]),
             ("50 rcpts / 10 domains",
              [["u%d.%d@s%d.test" % (m, i, i % 10) for i in range(50)]
               for m in range(int(20 * scale))]))
    for case, msgs in cases:
        res = {}
        for label, snd, names in (("agent", asnd, ("pipe",)),
                                  ("true", tsnd, ("pipe",)),
                                  ("smtp", psnd, ("smtp",))):
            res[label] = queue_first(snd, msgs, names, sink)
        a, t, p = res["agent"], res["true"], res["smtp"]
        note = "%d msgs held, then released" % len(msgs)
        row("b", case, "messages/s", round(a["rate"], 1),
            round(p["rate"], 1), "msg/s", note)
        row("b", case, "ceiling: pipe(8) + /bin/true", round(t["rate"], 1),
            round(p["rate"], 1), "msg/s", "nothing delivered: the limit "
            "of any pipe(8) agent")
        ROWS.append(dict(part="b", case=case, metric="agent / ceiling",
                         agent=round(a["rate"], 1), smtp=round(t["rate"], 1),
                         ratio=round(a["rate"] / t["rate"], 2), unit="msg/s",
                         note="goal >= 0.8 (1 rcpt)"))
        row("b", case, "delivered", a["sent"], p["sent"], "rcpts",
            "deferred: %d / %d" % (a["deferred"], p["deferred"]))
        row("b", case, "transactions", a["tx"], p["tx"], "")
        row("b", case, "connections", a["conns"], p["conns"], "")
        row("e", case, "CPU per delivered rcpt", round(a["cpu"], 2),
            round(p["cpu"], 2), "ms",
            "agent: pipe(8) + agents; smtp: smtp(8); ceiling %.2f"
            % t["cpu"])
    for inst in (asnd, tsnd, psnd, sink):
        inst.stop()


# --- (c) milter ----------------------------------------------------------------

def part_c():
    say("(c) receiving Postfix with and without rapidretry-milter ...")
    n = 300 if QUICK else 1000
    for reuse in (False, True):
        rate = milter_bench.measure(n, 4, 1, reuse,
                                    name="c-milter-%d" % reuse)
        for kind in ("unix", "inet"):
            ROWS.append(dict(
                part="c", case="%d msgs, 4 sessions, %s" % (
                    n, "many per conn." if reuse else "1 per conn."),
                metric="smtpd msg/s, milter %s / none" % kind,
                agent=round(rate[kind], 1), smtp=round(rate["none"], 1),
                ratio=round(rate[kind] / rate["none"], 2), unit="msg/s",
                note="smtp-source -r 1, alternating in one run"))


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


# --- (f) CPU of one run --------------------------------------------------------
#
# The agent delivering one 1-recipient message, started as pipe(8) would
# start a command line, `sh -c 'exec agent ...'`, against `sh -c 'exec
# /bin/true'` started the same way: CPU time (user + system, the kernel's
# own accounting from wait4(2), the quantity perf calls task-clock) of
# each run, A and B in turn, medians. Default configuration: journal and
# delivery log on, security_level may; one server without STARTTLS, one
# with it (a certificate from a test CA: the chain is checked, the result
# is Untrusted, as for most servers at "may").

def spawn_cpu(argv, stdin_path):
    """spawn_cpu - run ARGV with stdin from a file, output discarded;
    (exit status, CPU milliseconds of the process): its task-clock under
    perf stat when perf is installed (the figures in README), else user +
    system time from wait4(2), which reads about a third higher for short
    runs on this machine (for /bin/true and the agent alike)."""
    fa = [(os.POSIX_SPAWN_OPEN, 0, stdin_path, os.O_RDONLY, 0),
          (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)]
    if PERF:
        rfd, wfd = os.pipe()
        fa.append((os.POSIX_SPAWN_DUP2, wfd, 2))
        argv = [PERF, "stat", "-x,", "-e", "task-clock", "--"] + argv
    else:
        fa.append((os.POSIX_SPAWN_DUP2, 1, 2))
    pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/bin:/bin",
                                         "LANG": "C"}, file_actions=fa)
    if not PERF:
        _, status, ru = os.wait4(pid, 0)
        return status, (ru.ru_utime + ru.ru_stime) * 1000
    os.close(wfd)
    with os.fdopen(rfd) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    m = re.search(r"^([\d.]+),msec,task-clock", err, re.M)
    return (status if m else -1), float(m.group(1)) if m else 0.0


PERF = next((p for p in ("/usr/bin/perf", "/usr/local/bin/perf")
             if os.access(p, os.X_OK)
             and subprocess.run([p, "stat", "-e", "task-clock", "true"],
                                capture_output=True).returncode == 0), None)


def per_run(label, port, runs, tdir, binary):
    """per_run - RUNS pairs (agent run, /bin/true run); medians in ms."""
    conf = rrtest.write_file(os.path.join(tdir, label + ".conf"),
                             "[agent]\njournal = %s/%s.db\n"
                             "[dsn]\nsendmail = /bin/true\n" % (tdir, label))
    msg = rrtest.write_file(os.path.join(tdir, "msg"), rrtest.sample_message(
        "b@src.test", ["r@d1.test"]))
    a, b, bad = [], [], 0
    for i in range(runs + 5):   # the first 5 of each: warm-up
        cmd = ("exec %s -c %s -i F%X -n [127.0.0.1]:%d -f b@src.test -- "
               "r@d1.test" % (binary, conf, 0x100000 * (len(label) + 1) + i,
                              port))
        st, ca = spawn_cpu(["/bin/sh", "-c", cmd], msg)
        _, cb = spawn_cpu(["/bin/sh", "-c", "exec /bin/true"], msg)
        if st != 0:
            bad += 1
        if i >= 5:
            a.append(ca)
            b.append(cb)
    return statistics.median(a), statistics.median(b), bad


def part_f():
    say("(f) CPU of one agent run vs /bin/true ...")
    runs = 60 if QUICK else 250
    tdir = rrtest.subdir("f-runs")
    binary = rrtest.agent_binary()
    plain = Receiver("f-plain", main={"virtual_transport": "discard"}).start()
    ca = tlsca.CA("bench")
    cert, key = ca.server("mx", ["mx.tls.test"])
    tls = Receiver("f-tls", main=dict(tlsca.smtpd_tls(cert, key),
                                      virtual_transport="discard"),
                   master_extra=tlsca.TLSMGR).start()
    for case, recv, goal in (("no STARTTLS", plain, 2),
                             ("STARTTLS, level may", tls, 3)):
        ma, mb, bad = per_run(case.split()[0].replace(",", ""), recv.port,
                              runs, tdir, binary)
        ROWS.append(dict(part="f", case="1 rcpt, " + case,
                         metric="CPU per run (median)", agent=round(ma, 2),
                         smtp=round(mb, 2), ratio=round(ma / mb, 2),
                         unit="ms", note="right: /bin/true; %d runs each, "
                         "%s; goal <= %dx; %d failed"
                         % (runs, "task-clock" if PERF else "wait4",
                            goal, bad)))
    plain.stop()
    tls.stop()


# --- (g) many agents at once -----------------------------------------------------

def part_g():
    say("(g) 20 agents at once on one journal and log ...")
    workers, each = (20, 25) if QUICK else (20, 100)
    recv = Receiver("g-recv", domains=("d1.test",)).start()
    agent = rrtest.Agent(name="g-agent", relay="[127.0.0.1]:%d" % recv.port,
                         deadline="120s")
    out = {}
    lock = threading.Lock()

    def worker(w):
        for m in range(each):
            qid = "%X" % (0xC00000 + w * 0x1000 + m)
            rcpt = "w%d.m%d@d1.test" % (w, m)
            res = agent.run([rcpt], queue_id=qid, timeout=130)
            res.rcpt = rcpt
            with lock:
                out[qid] = res

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,))
               for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    n = workers * each
    recv.wait_delivered(sum(1 for r in out.values() if r.rc == 0),
                        timeout=60)
    got = recv.delivered()
    failed = {q: r for q, r in out.items() if r.rc != 0}
    deferred = len(failed)
    for q, r in sorted(failed.items())[:3]:
        say("(g) %s: %r" % (q, r))
        for line in agent.log_lines():
            if q in line:
                say("(g)   " + line)
    dup = len(got) - len(set(got))
    # lost: the agent said delivered, the receiver has nothing (a
    # deferred message is Postfix's to retry, not lost)
    have = set(got)
    lost = sum(1 for r in out.values() if r.rc == 0 and r.rcpt not in have)
    db = agent.journal
    sizes = ", ".join("%s %d KB" % (name, os.path.getsize(p) // 1024)
                      for name, p in (("journal", db),
                                      ("journal WAL", db + "-wal"),
                                      ("log", db[:-3] + "-log.db"),
                                      ("log WAL", db[:-3] + "-log.db-wal"))
                      if os.path.exists(p))
    ROWS.append(dict(part="g", case="%d agents x %d msgs" % (workers, each),
                     metric="deferred / duplicated / lost",
                     agent="%d/%d/%d" % (deferred, dup, lost), smtp="",
                     ratio=None, unit="msgs",
                     note="%.0f msg/s; %s" % (n / wall, sizes)))
    recv.stop()


# --- (i) destination scheduling --------------------------------------------------

def part_i():
    """part_i - the state operations of destination scheduling (DESIGN
    §11) per session, timed in bench/sched_bench.c one cycle at a time:
    with the state (left) and with scheduling off (right, the ceiling);
    1 process and 20 processes on one state file."""
    say("(i) destination scheduling ...")
    tool = os.path.join(os.environ["RR_BUILD"], "bench", "sched-bench")
    tdir = rrtest.subdir("sched-bench")
    confs = {}
    for name, text in (("on", "concurrency = 1000\ninitial_concurrency = "
                        "1000\n"), ("off", "state = none\n")):
        confs[name] = rrtest.write_file(
            os.path.join(tdir, name + ".conf"),
            "[agent]\njournal = %s/j.db\nlog_file = %s/log\n[schedule]\n%s"
            % (tdir, tdir, text))
    rsock = None
    if shutil.which("redis-server"):     # the fleet's store, same loop
        rsock = os.path.join(tdir, "redis.sock")
        rp = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket",
                               rsock, "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        rrtest.at_cleanup(lambda: (rp.kill(), rp.wait()))
        rrtest.wait_until(lambda: os.path.exists(rsock), 10)
        confs["redis"] = rrtest.write_file(
            os.path.join(tdir, "redis.conf"),
            "[agent]\njournal = %s/j.db\nlog_file = %s/log\n[schedule]\n"
            "concurrency = 1000\ninitial_concurrency = 1000\n[state]\n"
            "backend = redis\nredis = unix:%s\n" % (tdir, tdir, rsock))
    n = 2000 if QUICK else 20000
    for case, how, note in (("new session, Redis (unix)", "x",
                             "per session: slot, open, back"),
                            ("delivery's session, Redis", "limits",
                             "and the fleet's learned limit")):
        if not rsock:
            break
        res = {}
        for name in ("redis", "off"):
            p = subprocess.run([tool, confs[name], str(n // 10), "1", how],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError("sched-bench: %s" % p.stderr)
            res[name] = json.loads(p.stdout)
        for metric in ("median_us", "p90_us"):
            ROWS.append(dict(part="i", case=case,
                             metric=metric.replace("_us", ""),
                             agent=res["redis"][metric],
                             smtp=res["off"][metric], ratio=None, unit="us",
                             note=note))
    for case, procs, how in (("new session, 1 process", 1, "x"),
                             ("reused session, 1 process", 1, "reuse"),
                             ("new session, 20 procs, 1 server", 20, "same"),
                             ("new session, 20 procs, 20 servers", 20, "x")):
        res = {}
        for name in ("on", "off"):
            p = subprocess.run([tool, confs[name], str(n // procs),
                                str(procs), how], capture_output=True,
                               text=True)
            if p.returncode != 0:
                raise RuntimeError("sched-bench: %s" % p.stderr)
            res[name] = json.loads(p.stdout)
        for metric in ("median_us", "p90_us"):
            ROWS.append(dict(part="i", case=case, metric=metric.replace(
                "_us", ""), agent=res["on"][metric], smtp=res["off"][metric],
                ratio=None, unit="us", note="per session: slot, open, "
                "back" if "new" in case else "per message: slot, back"))


# --- output --------------------------------------------------------------------

def table():
    """table - the rows, readable."""
    heads = {"a": "(a) first delivery attempt",
             "b": "(b) throughput through Postfix to a sink",
             "c": "(c) receiving Postfix: milter on (left) / off (right)",
             "d": "(d) rapidretry-agent memory: 50 MB (left) / 1 KB (right)",
             "e": "(e) CPU per delivered recipient",
             "f": "(f) CPU of one agent run (left) / of /bin/true (right)",
             "g": "(g) many agents at once on one journal",
             "h": "(h) LMTP mode (left) / smtp(8) (right), delivery alone",
             "i": "(i) destination state: on (left) / scheduling off "
                  "(right)",
             "j": "(j) CPU per message: each case (left) / smtp(8) of the "
                  "same round (right)"}
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
    failed = []
    for part, fn in (("a", part_a), ("b", part_b), ("c", part_c),
                     ("d", part_d), ("f", part_f), ("g", part_g),
                     ("h", lambda: lmtp_bench.part_h(row, say)),
                     ("i", part_i),
                     ("j", lambda: cpu_bench.part_j(row, say))):
        if part not in PARTS:
            continue
        try:
            fn()
        except Exception as e:          # the other parts still count
            say("part (%s) failed: %r" % (part, e))
            failed.append(part)
    table()
    write_results()
    say("took %.0f s" % (time.monotonic() - t0))
    rrtest._done = True
    if failed:
        sys.exit("failed: part(s) %s" % ", ".join(failed))


if __name__ == "__main__":
    main()
