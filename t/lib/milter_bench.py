#!/usr/bin/env python3
"""milter_bench.py - a measurement, not a test: the message rate of one
throw-away Postfix smtpd without rapidretry-milter, with it over a UNIX
socket and with it over TCP (inet:PORT@127.0.0.1), in one run. One
Postfix instance listens on three ports that differ only in
smtpd_milters; smtp-source sends 1-recipient messages to `discard`,
one message per connection (or many with -d), and the three kinds
alternate round by round so a busy machine hurts them alike. Besides the
rate, the CPU time that Postfix's processes and the milter spent per
message (from /proc; max_use is raised so no process exits and takes
its CPU time along), which a busy machine does not change much.

    RR_BUILD=$PWD/build/default python3 t/lib/milter_bench.py \\
        [-m MESSAGES] [-s SESSIONS] [-r ROUNDS] [-d] [--conf TEXT]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                          # noqa: E402
from postfix import Receiver, MILTER_MAIN              # noqa: E402
from rrmilter import Milter                            # noqa: E402

KINDS = ("none", "unix", "inet")
CONF = "[milter]\nmode = domain\nstats_interval = 0\n"


class Bench:
    """Bench - one Postfix with three smtpd ports (no milter, the milter
    on a UNIX socket, the same milter configuration on TCP)."""

    def __init__(self, name="milter-bench", conf=CONF, main=None):
        self.unix = Milter(rrtest.subdir(name + "/unix"), conf)
        self.inet_port = rrtest.free_port()
        self.inet = Milter(rrtest.subdir(name + "/inet"), conf,
                           spec="inet:%d@127.0.0.1" % self.inet_port)
        self.ports = {"none": rrtest.free_port(), "unix": None,
                      "inet": rrtest.free_port()}
        settings = dict(MILTER_MAIN)
        settings.update({"virtual_transport": "discard",
                         "smtpd_milters": "unix:" + self.unix.socket,
                         "max_use": "1000000", "max_idle": "3600s"})
        settings.update(main or {})
        extra = ("127.0.0.1:%d inet n - n - - smtpd -o smtpd_milters=\n"
                 % self.ports["none"] +
                 "127.0.0.1:%d inet n - n - - smtpd -o "
                 "smtpd_milters=inet:127.0.0.1:%d\n"
                 % (self.ports["inet"], self.inet_port))
        self.pf = Receiver(name, domains=["d1.test"], main=settings,
                           master_extra=extra)
        self.ports["unix"] = self.pf.port

    def start(self):
        """start - both milters, then Postfix."""
        for m in (self.unix, self.inet):
            if not m.start():
                sys.exit("milter did not start:\n" + m.read_log())
        self.pf.start()
        for p in self.ports.values():
            rrtest.wait_until(lambda: rrtest.port_listening(p), 20,
                              what="smtpd port %d" % p)
        return self

    def stop(self):
        self.unix.stop()
        self.inet.stop()
        self.pf.stop()

    def cpu(self):
        """cpu - {pid: CPU seconds} of the master, its children and the
        two milters."""
        tck = os.sysconf("SC_CLK_TCK")
        want = {self.pf.master_pid(), self.unix.proc.pid, self.inet.proc.pid}
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                st = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1]
            except OSError:
                continue
            f = st.split()
            if int(d) in want or int(f[1]) in want:
                out[int(d)] = (int(f[11]) + int(f[12])) / tck
        return out

    def blast(self, kind, n, sessions, reuse=False):
        """blast - N messages through smtp-source to KIND's port; seconds
        taken (None when smtp-source failed)."""
        cmd = ["smtp-source", "-s", str(sessions), "-m", str(n), "-r", "1",
               "-f", "s@bench.test", "-t", "r@d1.test", "-c"]
        if reuse:
            cmd.append("-d")
        cmd.append("127.0.0.1:%d" % self.ports[kind])
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        took = time.monotonic() - t0
        if p.returncode != 0:
            rrtest.diag("smtp-source %s: rc=%d %s" % (kind, p.returncode,
                                                      p.stderr[-500:]))
            return None
        return took


def measure(n=1000, sessions=4, rounds=1, reuse=False, conf=CONF,
            main=None, name="milter-bench"):
    """measure - {kind: messages/s} over ROUNDS alternating rounds of N
    messages each; a warm-up round of 50 first."""
    b = Bench(name, conf, main).start()
    took = {k: 0.0 for k in KINDS}
    cpu = {k: 0.0 for k in KINDS}
    try:
        for k in KINDS:
            b.blast(k, 50, sessions, reuse)
        for r in range(rounds):
            for k in KINDS[r % 3:] + KINDS[:r % 3]:     # each kind first once
                c0 = b.cpu()
                t = b.blast(k, n, sessions, reuse)
                c1 = b.cpu()
                if t is None:
                    sys.exit("smtp-source failed (%s)" % k)
                took[k] += t
                cpu[k] += sum(v - c0.get(p, 0) for p, v in c1.items())
    finally:
        b.stop()
    MEASURE_CPU.update({k: 1000 * cpu[k] / (n * rounds) for k in KINDS})
    return {k: n * rounds / took[k] for k in KINDS}


# measure() leaves here the CPU milliseconds per message of each kind
MEASURE_CPU = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", type=int, default=1000)
    ap.add_argument("-s", type=int, default=4)
    ap.add_argument("-r", type=int, default=1)
    ap.add_argument("-d", action="store_true",
                    help="many messages per connection")
    ap.add_argument("--conf", default=CONF)
    ap.add_argument("--main", action="append", default=[],
                    help="NAME=VALUE for the receiver's main.cf")
    a = ap.parse_args()
    main_cf = dict(kv.split("=", 1) for kv in a.main)
    rate = measure(a.m, a.s, a.r, a.d, a.conf.replace("\\n", "\n"), main_cf)
    print("messages=%d sessions=%d rounds=%d %s" % (
        a.m, a.s, a.r, "one connection, many messages" if a.d
        else "one message per connection"))
    for k in KINDS:
        print("%-5s %7.1f msg/s  %.2fx   CPU %.2f ms/msg" % (
            k, rate[k], rate[k] / rate["none"], MEASURE_CPU[k]))
    rrtest._done = True         # not a TAP test: no plan, no warning


if __name__ == "__main__":
    main()
