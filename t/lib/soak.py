#!/usr/bin/env python3
"""soak - one resident rapidretry-agent --lmtp serving N messages over one
kept LMTP session (DESIGN §9), as Postfix's lmtp client would hand them
over, to a scripted server in lean mode: 1-5 recipients per message over
3 domains, at most 3 per transaction (RapidRetry on the same
connection), some refused 550 (bounced) or 450 (deferred), outbound
sessions reused under the connection cache's limits. Domains d0 and d1
route to a plain server, d2 to one that offers STARTTLS (the agent's
default security_level = may takes it): TLS on for a third of the
recipients and most messages' second session.

Every message checks its LMTP replies (one per accepted RCPT, each of the
class its recipient's script gives); at the end every good recipient was
taken exactly once and no refused one. Every EVERY messages the agent's
RSS (VmRSS), open descriptors and the server's open sessions are sampled:
the curve.

Usage: soak.py [-n N] [--every K] [--json FILE]    (make soak N=100000)
"""

import argparse
import json
import os
import random
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                   # noqa: E402
import tlsca                                    # noqa: E402
from lmtpclient import LmtpAgent                # noqa: E402
from smtpsink import SmtpSink                   # noqa: E402

SCRIPT = {"lean": True, "hostname": "soak.test", "rcpt_max": 3, "rules": [
    {"cmd": "RCPT", "addr_re": "^bad", "reply": "550 5.1.1 User unknown"},
    {"cmd": "RCPT", "addr_re": "^grey",
     "reply": "450 4.2.0 Greylisted, try again later"}]}


def sample(pid):
    """sample - (RSS in KiB, open descriptors) of process PID."""
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def soak(n, every, seed=1, progress=None):
    """soak - the run; returns {"curve": [...], "fail": [...], ...}."""
    rng = random.Random(seed)
    sink = SmtpSink(SCRIPT)
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    cert, key = tlsca.CA("soak").server("tls", ["tls.soak.test"])
    tsink = SmtpSink(dict(SCRIPT, hostname="tls.soak.test",
                          tls={"cert": cert, "key": key}))
    tport = tsink.start()
    rrtest.at_cleanup(tsink.stop)
    agent = rrtest.Agent(name="soak", relay="",
                         extra_text="\n[lmtp]\ntime_limit = 30d\n"
                                    "connection_cache_time_limit = 5s\n"
                                    "[routes]\n"
                                    "d0.test = relay:[127.0.0.1]:%d\n"
                                    "d1.test = relay:[127.0.0.1]:%d\n"
                                    "d2.test = relay:[127.0.0.1]:%d\n"
                                    % (port, port, tport))
    s = LmtpAgent(agent, timeout=60)
    s.reply()
    s.cmd("LHLO soak.test")
    fail, curve, good = [], [], []
    msg = rrtest.sample_message("s@src.test", ["x@d0.test"],
                                subject="soak")
    t0 = time.monotonic()
    for i in range(1, n + 1):
        rcpts = []
        for j in range(rng.randint(1, 5)):
            kind = rng.random()
            pre = "bad" if kind < 0.03 else "grey" if kind < 0.06 else "m"
            rcpts.append("%s%dr%d@d%d.test" % (pre, i, j, j % 3))
        s.raw = b""             # the client's own record: not kept here
        mail, rr, data, final = s.transaction("s@src.test", rcpts, msg,
                                              ident="S%08X" % i)
        want = ["5" if r.startswith("bad") else "4" if r.startswith("grey")
                else "2" for r in rcpts]
        got = [x[:1] for x in final]
        if got != want:
            fail.append("message %d: replies %r, want %r (%r)"
                        % (i, got, want, final[:3]))
            if len(fail) > 20:
                break
        good += [r for r in rcpts if r.startswith("m")]
        if i % every == 0 or i == n:
            rss, fds = sample(s.proc.pid)
            curve.append({"messages": i, "rss_kib": rss, "fds": fds,
                          "server_sessions": sink.active() + tsink.active(),
                          "tls_handshakes": tsink.tls_sessions,
                          "seconds": round(time.monotonic() - t0, 1)})
            if progress:
                progress(curve[-1])
    s.cmd("QUIT")
    s.wait()
    rrtest.wait_until(lambda: sink.active() + tsink.active() == 0, 10)
    taken = sink.taken + tsink.taken
    twice = [r for r in good if taken[r] > 1]
    missing = [r for r in good if taken[r] == 0]
    wrong = [r for r in taken if not r.startswith("m")]
    if tsink.tls_sessions == 0:
        fail.append("no session to the STARTTLS server used TLS")
    if twice:
        fail.append("%d taken twice, e.g. %s" % (len(twice), twice[:3]))
    if missing:
        fail.append("%d never taken, e.g. %s" % (len(missing), missing[:3]))
    if wrong:
        fail.append("refused ones taken: %s" % wrong[:3])
    return {"messages": n, "recipients": len(good), "curve": curve,
            "fail": fail, "elapsed": round(time.monotonic() - t0, 1),
            "transactions": sink.ntaken + tsink.ntaken,
            "tls_handshakes": tsink.tls_sessions}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--every", type=int, default=10000)
    ap.add_argument("--json")
    a = ap.parse_args()
    res = soak(a.n, a.every, progress=lambda c: print(json.dumps(c),
                                                      flush=True))
    print("%d messages, %d good recipients, %d transactions, %d TLS "
          "handshakes, %.0fs; failures: %d" % (
              res["messages"], res["recipients"], res["transactions"],
              res["tls_handshakes"], res["elapsed"], len(res["fail"])))
    for f in res["fail"]:
        print("FAIL " + f)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    rrtest._done = True      # a program, not a TAP test: no plan to end
    rrtest._run_cleanups()
    sys.exit(1 if res["fail"] else 0)


if __name__ == "__main__":
    main()
