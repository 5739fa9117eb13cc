#!/usr/bin/env python3
"""tls_bench - what STARTTLS costs rapidretry-agent (a measurement, not a
test): a Postfix receiver with STARTTLS and a test CA on loopback; the
agent delivers a 1-recipient and a 20-recipient message N times each at
security levels none, may and verify; medians of the run times. The
handshake alone is measured with Python's ssl module against the same
smtpd (STARTTLS reply to finished handshake).

  RR_BUILD=$PWD/build/default python3 t/lib/tls_bench.py [N]
"""

import os
import socket
import ssl
import statistics
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest
from postfix import Receiver
import tlsca


def handshake_ms(port, cafile, n):
    """handshake_ms - median STARTTLS + TLS handshake time in ms."""
    times = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line
        reply()
        s.sendall(b"EHLO bench.test\r\n")
        reply()
        t0 = time.monotonic()
        s.sendall(b"STARTTLS\r\n")
        reply()
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
        t = ctx.wrap_socket(s, server_hostname="mx.tls.test")
        times.append((time.monotonic() - t0) * 1000)
        t.close()
    return statistics.median(times)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rrtest.require_root()
    ca = tlsca.CA("bench")
    cert, key = ca.server("mx", ["mx.tls.test"])
    recv = Receiver("benchrecv", main=tlsca.smtpd_tls(cert, key),
                    master_extra=tlsca.TLSMGR).start()
    agent = rrtest.Agent(deadline="60s")
    rcpts20 = ["r%02d@d1.test" % i for i in range(1, 21)]
    levels = {
        "none": "[tls]\nsecurity_level = none\n",
        "may": "[tls]\nca_file = %s\n" % ca.cert,
        "verify": "[tls]\nca_file = %s\nsecurity_level = verify\n"
                  "verify_names = mx.tls.test\n" % ca.cert,
    }
    print("STARTTLS + handshake (python ssl client, median of %d): %.1f ms"
          % (n, handshake_ms(recv.port, ca.cert, n)))
    qid = 0xBE000
    for name, text in levels.items():
        agent.write_conf(extra_text=text)
        for rl in (["one@d1.test"], rcpts20):
            times = []
            for _ in range(n):
                qid += 1
                res = agent.run(rl, queue_id="%X" % qid,
                                nexthop="[127.0.0.1]:%d" % recv.port)
                if res.rc != 0:
                    print("run failed: %r" % res)
                    return 1
                times.append(res.elapsed * 1000)
            print("agent, level %-6s %2d recipient(s): median %.1f ms, "
                  "min %.1f ms (%d runs)"
                  % (name, len(rl), statistics.median(times), min(times), n))
    return 0


if __name__ == "__main__":
    rc = main()
    rrtest._done = True     # not a TAP test: no plan at exit
    sys.exit(rc)
