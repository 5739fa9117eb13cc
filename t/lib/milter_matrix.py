#!/usr/bin/env python3
"""milter_matrix.py - a measurement, not a test: which sender delivers
what at once to a Postfix behind rapidretry-milter (domain mode), with
`reply_code = 451` and with 452. One message, 20 recipients over 4
domains (4 classes). For each sender: recipients delivered at the first
attempt, transactions, and the later attempts the rest needed: forced
with `postqueue -f` (no waiting), each attempt's delay given by Postfix's
back-off rule for the deferred queue (minimal_backoff_time 300 s, then the
message's age, at most maximal_backoff_time 4000 s).

    RR_BUILD=$PWD/build/default [RR_EXIM=DIR] python3 t/lib/milter_matrix.py

RR_EXIM: a directory with Debian's exim4-daemon-light and exim4-base
unpacked (dpkg-deb -x), its libraries installed, and the system user
Debian-exim; Exim 4.96 is then a third sender.
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                          # noqa: E402
from postfix import Receiver, Sender                   # noqa: E402
from rrmilter import Milter                            # noqa: E402

DOMAINS = ["d1.test", "d2.test", "d3.test", "d4.test"]
RCPTS = ["u%d@%s" % (i, d) for d in DOMAINS for i in range(5)]


def postfix_statuses(snd, since):
    """statuses - [(rcpt, status)] the sender logged since SINCE."""
    rx = re.compile(r": [0-9A-F]{6,}: to=<([^>]*)>,.* status=(\w+)")
    return [m.groups() for m in map(rx.search, snd.log_lines(since)) if m]


statuses = postfix_statuses


def backoff(ages):
    """backoff - the times (s after arrival) of attempts 2.. under
    Postfix's rule: next = now + clamp(now - arrival, 300, 4000)."""
    t, out = 0, []
    for _ in range(ages):
        t += min(max(t, 300), 4000)
        out.append(t)
    return out


def run(snd, recv, label, first_wait=60):
    """run - one message through SND; a dict of what happened."""
    global statuses
    mark_s, mark_r = snd.mark(), recv.mark()
    t0 = time.monotonic()
    msg = rrtest.sample_message("s@src.test", RCPTS)
    if isinstance(snd, Exim):
        statuses = exim_statuses
        snd.send("s@src.test", RCPTS, msg)
    else:
        statuses = postfix_statuses
        subprocess.run(["sendmail", "-C", snd.etc, "-f", "s@src.test",
                        "--"] + RCPTS, input=msg.encode(), check=True)
    rrtest.wait_until(lambda: len(statuses(snd, mark_s)) >= len(RCPTS),
                      first_wait, what=label + " first attempt")
    first = statuses(snd, mark_s)
    sent1 = sum(1 for _, s in first if s == "sent")
    took = time.monotonic() - t0
    rrtest.wait_until(lambda: len(recv.sessions(mark_r)) >=
                      recv.connections(mark_r), 15)
    tx1 = recv.transactions(mark_r)
    attempts, sent = 1, sent1
    while sent < len(RCPTS) and attempts < 10:
        m = snd.mark()
        snd.flush()
        attempts += 1
        left = len(RCPTS) - sent
        rrtest.wait_until(lambda: len(statuses(snd, m)) >= left, 60,
                          what=label + " attempt %d" % attempts)
        sent += sum(1 for _, s in statuses(snd, m) if s == "sent")
    if isinstance(snd, Exim):
        # Debian runs Exim's queue every 30 minutes (-q30m); the retry
        # rule's 15 minutes have passed by each run
        times = [1800 * (i + 1) for i in range(attempts - 1)]
        how = "Exim queue runs, -q30m"
    else:
        times, how = backoff(attempts - 1), "Postfix back-off"
    return dict(sent1=sent1, took=took, tx1=tx1, attempts=attempts,
                sent=sent, times=times, how=how)


EXIM_CONF = """\
exim_path = {exim}
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
primary_hostname = exim.test
exim_user = Debian-exim
exim_group = Debian-exim
trusted_users = root
keep_environment =
begin routers
smart:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = remote
  self = send
begin transports
remote:
  driver = smtp
  port = {port}
  hosts_avoid_tls = *
begin retry
* * F,2h,15m; G,16h,1h,1.5; F,4d,6h
"""


class Exim:
    """Exim - Exim 4.96 as a sender to [127.0.0.1]:PORT, Debian's retry
    rule; messages delivered in the foreground (-odi), queue runs forced
    (-qff)."""

    def __init__(self, name, port):
        self.exim = os.path.join(os.environ["RR_EXIM"], "usr/sbin/exim4")
        self.dir = rrtest.subdir(name)
        for sub in ("spool", "log"):
            rrtest.subdir(name + "/" + sub, owner="Debian-exim")
        self.conf = rrtest.write_file(os.path.join(self.dir, "exim.conf"),
                                      EXIM_CONF.format(exim=self.exim,
                                                       dir=self.dir,
                                                       port=port))
        self.etc = None

    def mark(self):
        return len(self.log_lines())

    def log_lines(self, since=0):
        p = os.path.join(self.dir, "log", "mainlog")
        return (rrtest.read_file(p).splitlines() if os.path.exists(p)
                else [])[since:]

    def send(self, sender, rcpts, message):
        subprocess.run([self.exim, "-C", self.conf, "-odi", "-f", sender,
                        "--"] + rcpts, input=message.encode(), check=True,
                       capture_output=True)

    def flush(self):
        subprocess.run([self.exim, "-C", self.conf, "-qff"],
                       capture_output=True)

    def stop(self):
        pass


def exim_statuses(ex, since):
    """exim_statuses - [(rcpt, status)] from Exim's main log: "=>"
    delivered ("->" another recipient of the same delivery), "=="
    deferred, "**" bounced."""
    words = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}
    out = []
    for line in ex.log_lines(since):
        m = re.search(r" (=>|->|==|\*\*) (\S+)", line)
        if m:
            out.append((m.group(2), words[m.group(1)]))
    return out


def main():
    results = []
    for code in ("451", "452"):
        d = rrtest.subdir("matrix-%s/milter" % code)
        m = Milter(d, "[milter]\nmode = domain\nreply_code = %s\n"
                   "stats_interval = 0\n" % code)
        if not m.start():
            sys.exit("milter did not start: " + m.read_log())
        recv = Receiver("matrix-%s-recv" % code, domains=DOMAINS,
                        milter=m.socket,
                        main={"virtual_transport": "discard"}).start()
        snd_agent = Sender("matrix-%s-agent" % code,
                           relay_port=recv.port).start()
        snd_smtp = Sender("matrix-%s-smtp" % code, relay_port=recv.port,
                          smtp=True).start()
        senders = [("rapidretry-agent", snd_agent),
                   ("Postfix smtp", snd_smtp)]
        if os.environ.get("RR_EXIM"):
            senders.append(("Exim 4.96", Exim("matrix-%s-exim" % code,
                                              recv.port)))
        for name, snd in senders:
            r = run(snd, recv, "%s %s" % (name, code))
            results.append((name, code, r))
        for inst in (snd_agent, snd_smtp, recv):
            inst.stop()
        m.stop()
    print("one message, %d recipients in %d domains, milter mode domain"
          % (len(RCPTS), len(DOMAINS)))
    print("%-17s %-5s %-22s %-5s %s" % ("sender", "code", "1st attempt",
                                        "txns", "the rest"))
    for name, code, r in results:
        rest = ("-" if r["sent1"] == len(RCPTS) else
                "%d more attempts, at %s s (%s)" % (
                    r["attempts"] - 1, ", ".join(map(str, r["times"])),
                    r["how"]))
        print("%-17s %-5s %2d of %d in %5.2f s     %-5d %s" % (
            name, code, r["sent1"], len(RCPTS), r["took"], r["tx1"], rest))
    rrtest._done = True         # not a TAP test: no plan, no warning


if __name__ == "__main__":
    main()
