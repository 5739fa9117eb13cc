#!/usr/bin/env python3
"""milter_bench.py - a quick measurement, not a test: messages/s that a
throw-away Postfix smtpd accepts with and without rapidretry-milter
(domain mode; every message one connection, 2 recipients of one domain,
so the milter sees connect, MAIL, 2 RCPT, end of message).

    RR_BUILD=$PWD/build/default python3 t/lib/milter_bench.py [N] [CLIENTS]
"""

import itertools
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                          # noqa: E402
from postfix import Receiver                           # noqa: E402
from rrmilter import Milter, Smtp                      # noqa: E402

_runs = itertools.count(1)


def blast(port, n, clients):
    """N messages over CLIENTS threads, one connection per message."""
    errors = []

    def worker(k):
        for i in range(k, n, clients):
            try:
                s = Smtp(port)
                s.cmd("EHLO bench.test")
                replies, final = s.message(
                    "s@bench.test", ["a%d@d1.test" % i, "b%d@d1.test" % i])
                if final is None or not final.startswith(b"250"):
                    errors.append(final)
                s.close()
            except Exception as e:  # noqa: BLE001 - counted, reported
                errors.append(e)
    threads = [threading.Thread(target=worker, args=(k,))
               for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, errors


def run(with_milter, n, clients):
    """N messages to a fresh receiver; (messages/s, errors). Without the
    milter its smtpd keeps the other settings (smtpd_milters empty)."""
    name = "milter-bench-%d" % next(_runs)
    milter = Milter(rrtest.subdir(name + "/milter"),
                    "[milter]\nmode = domain\nstats_interval = 0\n")
    main = {"virtual_transport": "discard"}
    if not with_milter:
        main["smtpd_milters"] = ""
    pf = Receiver(name, domains=["d1.test"], milter=milter.socket,
                  main=main)
    try:
        if with_milter and not milter.start():
            sys.exit("milter did not start:\n" + milter.read_log())
        pf.start()
        blast(pf.port, 20, clients)                    # warm-up
        took, errors = blast(pf.port, n, clients)
        return n / took, errors
    finally:
        milter.kill()
        pf.stop()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    without, e1 = run(False, n, clients)
    with_, e2 = run(True, n, clients)
    print("messages=%d clients=%d" % (n, clients))
    print("without milter: %.0f msg/s (%d errors)" % (without, len(e1)))
    print("with milter:    %.0f msg/s (%d errors)" % (with_, len(e2)))
    print("ratio with/without: %.2f" % (with_ / without))
    rrtest._done = True         # not a TAP test: no plan, no warning


if __name__ == "__main__":
    main()
