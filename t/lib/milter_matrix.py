#!/usr/bin/env python3
"""milter_matrix.py - a measurement, not a test: which sender delivers
what at once to a Postfix behind rapidretry-milter (domain mode), with
`reply_code = 451` and with 452. One message, 20 recipients over 4
domains (4 classes). For each sender: recipients delivered at the first
attempt, transactions, and the later attempts the rest needed: forced
with `postqueue -f` (no waiting), each attempt's delay given by Postfix's
back-off rule for the deferred queue (minimal_backoff_time 300 s, then the
message's age, at most maximal_backoff_time 4000 s).

    RR_BUILD=$PWD/build/default python3 t/lib/milter_matrix.py
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


def statuses(snd, since):
    """statuses - [(rcpt, status)] the sender logged since SINCE."""
    rx = re.compile(r": [0-9A-F]{6,}: to=<([^>]*)>,.* status=(\w+)")
    return [m.groups() for m in map(rx.search, snd.log_lines(since)) if m]


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
    mark_s, mark_r = snd.mark(), recv.mark()
    t0 = time.monotonic()
    subprocess.run(["sendmail", "-C", snd.etc, "-f", "s@src.test", "--"]
                   + RCPTS, input=rrtest.sample_message(
                       "s@src.test", RCPTS).encode(), check=True)
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
    return dict(sent1=sent1, took=took, tx1=tx1, attempts=attempts,
                sent=sent, times=backoff(attempts - 1))


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
        for name, snd in (("rapidretry-agent", snd_agent),
                          ("Postfix smtp", snd_smtp)):
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
                "%d more attempts, at %s s (Postfix back-off)" % (
                    r["attempts"] - 1, ", ".join(map(str, r["times"]))))
        print("%-17s %-5s %2d of %d in %5.2f s     %-5d %s" % (
            name, code, r["sent1"], len(RCPTS), r["took"], r["tx1"], rest))
    rrtest._done = True         # not a TAP test: no plan, no warning


if __name__ == "__main__":
    main()
