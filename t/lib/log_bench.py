#!/usr/bin/env python3
"""log_bench - what the delivery log costs per delivery.

Runs the agent N times against the scripted server (5 recipients, one
transaction each) with [log] database = none, transcript = no and
transcript = yes, and prints the median wall time per run of each. Not a
test: run it by hand as root with RR_BUILD set.

    RR_BUILD=$PWD/build/default python3 t/lib/log_bench.py [N]
"""
import os
import statistics
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rrtest
from smtpsink import SmtpSink


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    sink = SmtpSink({})
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    rc = ["r%d@d1.test" % i for i in range(5)]
    agents = {}
    for name, text in (("no log", "[log]\ndatabase = none\n"),
                       ("log, transcript = no", "[log]\ntranscript = no\n"),
                       ("log, transcript = yes",
                        "[log]\ntranscript = yes\n")):
        a = rrtest.Agent(name="bench-%d" % len(agents),
                         relay="[127.0.0.1]:%d" % port, extra_text=text)
        a.run(rc, queue_id="W0")          # warm up, creates the files
        agents[name] = (a, [])
    # round robin, so drift on a shared machine hits all three alike
    for i in range(n):
        for name, (a, times) in agents.items():
            r = a.run(rc, queue_id="B%X" % i)
            assert r.rc == 0, r
            times.append(r.elapsed)
    res = {k: statistics.median(v[1]) for k, v in agents.items()}
    base = res["no log"]
    for name, t in res.items():
        print("%-24s median %.1f ms per run (%+.1f ms)" % (
            name, t * 1000, (t - base) * 1000))
    rrtest._done = True


main()
