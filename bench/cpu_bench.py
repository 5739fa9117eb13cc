"""cpu_bench - `make bench` part (j): the CPU one message costs on the
LMTP path (DESIGN §9), three ways in one run, to a receiver that costs
nearly nothing (Postfix's smtp-sink):
  smtp     Postfix smtp(8) -> smtp-sink
  lmtp     Postfix lmtp(8) -> rapidretry-agent --lmtp -> smtp-sink
  sync     the same with [agent] journal_sync = yes (each outcome synced)
  daemon   Postfix lmtp(8) -> rapidretry-agent --lmtp-daemon -> smtp-sink
           (resident workers: no spawn(8), no process per LMTP session)
  ceiling  Postfix lmtp(8) -> smtp-sink -L (an LMTP server that delivers
           nothing: what any LMTP-mode agent can at best reach)
Every case queues its 1-recipient messages first (defer_transports), then
releases them; only the delivery is timed. CPU is the whole machine's
(/proc/stat, every process: qmgr, the clients, the agent, the sink) over
the delivery window, per message; the agent's own share is read from its
processes. Two rounds, the order turned round in the second.

Standalone: python3 bench/cpu_bench.py [N] [--perf FILE] (root, RR_BUILD
set): with --perf the cases after smtp run under `perf record -a`; RR_CASES
(e.g. "smtp,lmtp") picks cases.
"""

import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest                                         # noqa: E402
from postfix import Sender                            # noqa: E402
from lmtpsender import LmtpSender                     # noqa: E402

QUICK = os.environ.get("RR_BENCH_QUICK") == "1"
HZ = os.sysconf("SC_CLK_TCK")
HELD = {"defer_transports": "smtp lmtp rapidretry",
        "initial_destination_concurrency": "20",
        "default_destination_concurrency_limit": "20"}


def machine_busy():
    """machine_busy - the whole machine's busy CPU so far, in ms (all
    states but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) * 1000.0 / HZ


def _procs():
    """_procs - {pid: (ppid, own CPU ms, reaped children's CPU ms,
    command line)} of every live process."""
    res = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
            with open("/proc/%s/stat" % pid) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        res[int(pid)] = (int(st[1]), (int(st[11]) + int(st[12])) * 1000.0
                         / HZ, (int(st[13]) + int(st[14])) * 1000.0 / HZ,
                         cmd)
    return res


def tree_cpu(roots):
    """tree_cpu - CPU ms so far of the processes ROOTS and all their
    descendants, with what the roots reaped (a child that exited counts
    in its parent's children's time once waited for): (total, the
    part of processes whose command line names rapidretry-agent)."""
    ps = _procs()
    kids = {}
    for pid, (ppid, _, _, _) in ps.items():
        kids.setdefault(ppid, []).append(pid)
    total = agent = 0.0
    todo = [r for r in roots if r in ps]
    for r in todo:
        total += ps[r][2]
    while todo:
        pid = todo.pop()
        total += ps[pid][1]
        if b"rapidretry-agent" in ps[pid][3]:
            agent += ps[pid][1] + ps[pid][2]
        todo += kids.get(pid, [])
    return total, agent


class Sink:
    """Sink - Postfix's smtp-sink on 127.0.0.1 (with lmtp=True its LMTP
    form); it answers everything 2xx and keeps nothing."""

    def __init__(self, lmtp=False):
        self.port = rrtest.free_port()
        args = ["smtp-sink", "-u", "nobody"] + (["-L"] if lmtp else []) + \
            ["127.0.0.1:%d" % self.port, "256"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        rrtest.at_cleanup(self.stop)
        rrtest.wait_until(lambda: rrtest.port_listening(self.port), 10,
                          what="smtp-sink on %d" % self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _sent(snd, since):
    return sum(1 for l in snd.log_lines(since) if " status=sent " in l)


def deliver_timed(snd, sink, n, perf=None):
    """deliver_timed - queue N 1-recipient messages while delivery is
    held, release, and time the delivery alone: (seconds, machine CPU ms,
    agent CPU ms, sent)."""
    for i in range(n):
        r = ["u%d@d%d.test" % (i, i % 10)]
        subprocess.run(["sendmail", "-C", snd.etc, "-f", "b@src.test", "--"]
                       + r, input=rrtest.sample_message("b@src.test", r)
                       .encode(), check=True)
    rrtest.wait_until(lambda: sum(1 for l in snd.log_lines() if
                                  "status=deferred (deferred transport)"
                                  in l) >= n, 300, interval=0.2)
    snd.main["defer_transports"] = ""
    mark = snd.mark()
    snd.reload()
    time.sleep(1)     # qmgr takes the new setting; nothing is sent yet
    prof = None
    if perf:
        prof = subprocess.Popen(["perf", "record", "-q", "-a", "-F", "499", "--call-graph", "dwarf,16384",
                                 "-o", perf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(1)
    roots = [snd.master_pid(), sink.proc.pid]
    if getattr(snd, "daemon", None):
        roots.append(snd.daemon.proc.pid)
    tree0, agent0 = tree_cpu(roots)
    busy0, t0 = machine_busy(), time.monotonic()
    # postqueue -f in the background: it may take longer than the
    # delivery it starts
    fl = subprocess.Popen(["postqueue", "-c", snd.etc, "-f"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rrtest.wait_until(lambda: _sent(snd, mark) >= n, 600, interval=0.01)
    wall, busy = time.monotonic() - t0, machine_busy() - busy0
    tree1, agent1 = tree_cpu(roots)
    fl.wait()
    if prof:
        prof.send_signal(2)
        prof.wait()
    return dict(wall=wall, machine=busy, path=tree1 - tree0,
                agent=agent1 - agent0, sent=_sent(snd, mark))


def senders():
    """senders - the three cases: name -> (make sender, the sink's
    stop)."""
    def smtp():
        s = Sink()
        return Sender("j-smtp", relay_port=s.port, smtp=True,
                      main=dict(HELD)), s

    def lmtp(sync=False):
        s = Sink()
        name = "j-sync" if sync else "j-lmtp"
        a = rrtest.Agent(name=name + "/agent", relay="[127.0.0.1]:%d"
                         % s.port, deadline="120s",
                         agent_extra={"journal_sync": "yes"} if sync else {})
        return LmtpSender(name, agent=a, main=dict(
            HELD, rapidretry_destination_concurrency_limit="20")), s

    def daemon():
        s = Sink()
        a = rrtest.Agent(name="j-daemon/agent", relay="[127.0.0.1]:%d"
                         % s.port, deadline="120s")
        return LmtpSender("j-daemon", agent=a, daemon=True, workers=20,
                          main=dict(HELD, rapidretry_destination_concurrency_limit="20")), s

    def ceiling():
        s = Sink(lmtp=True)
        return Sender("j-ceil", relay_port=s.port, smtp=True, main=dict(
            HELD, default_transport="lmtp:inet:[127.0.0.1]:%d" % s.port,
            relayhost="")), s
    return {"smtp": smtp, "lmtp": lmtp, "sync": lambda: lmtp(True),
            "daemon": daemon, "ceiling": ceiling}


def run_case(make, n, perf=None):
    snd, sink = make()
    snd.start()
    try:
        return deliver_timed(snd, sink, n, perf)
    finally:
        snd.stop()
        sink.stop()


def part_j(row, say, n=None):
    """part_j - the rows of (j) through ROW(part, case, metric, agent,
    smtp, unit, note)."""
    n = n or (150 if QUICK else 500)
    say("(j) CPU per message: smtp(8), LMTP mode, lmtp(8) to smtp-sink -L"
        " ...")
    cases = senders()
    res = {k: [] for k in cases}
    for order in (("smtp", "lmtp", "daemon", "sync", "ceiling"),
                  ("ceiling", "sync", "daemon", "lmtp", "smtp")):
        for k in order:
            res[k].append(run_case(cases[k], n))
    for k in ("lmtp", "daemon", "sync", "ceiling", "smtp"):
        for rnd, r in enumerate(res[k], 1):
            s = res["smtp"][rnd - 1]
            case = "%s, round %d" % (k, rnd)
            row("j", case, "messages/s", round(n / r["wall"], 1),
                round(n / s["wall"], 1), "msg/s",
                "%d of %d sent; smtp(8) of the same round beside"
                % (r["sent"], n))
            row("j", case, "delivery path CPU per message",
                round(r["path"] / n, 2), round(s["path"] / n, 2), "ms",
                "the sender's Postfix, its children, the agent, the sink")
            row("j", case, "machine CPU per message",
                round(r["machine"] / n, 2), round(s["machine"] / n, 2),
                "ms", "every process on the machine over the window")
            if k in ("lmtp", "daemon", "sync"):
                row("j", case, "agent CPU per message",
                    round(r["agent"] / n, 2), None, "ms",
                    "rapidretry-agent alone")


def main():
    rrtest.require_root()
    args = sys.argv[1:]
    perf = None
    if "--perf" in args:
        i = args.index("--perf")
        perf = args[i + 1]
        del args[i:i + 2]
    n = int(args[0]) if args else 500
    cases = senders()
    only = os.environ.get("RR_CASES", "smtp,lmtp,ceiling").split(",")
    for k in only:
        r = run_case(cases[k], n, perf if k != "smtp" else None)
        print("%-8s %4d/%d sent  %6.1f msg/s  path %.2f ms/msg  machine "
              "%.2f ms/msg  agent %.2f ms/msg" % (
                  k, r["sent"], n, n / r["wall"], r["path"] / n,
                  r["machine"] / n, r["agent"] / n))
    rrtest._done = True


if __name__ == "__main__":
    main()
