#!/usr/bin/env python3
"""15-dns.t - the resolver and the route table against real DNS servers
on loopback: Debian's unbound with the test zone of t/lib/dnsserver.py,
a dead port, and fake servers sending garbage, broken answers, SERVFAIL,
REFUSED or nothing. Runs the GTest binary t/unit/dns with their addresses
in the environment and passes its TAP on as one subtest per case."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import dnsserver  # noqa: E402

build = os.environ.get("RR_BUILD")
binary = os.path.join(build or "", "t", "unit", "dns")
if not build or not os.access(binary, os.X_OK):
    print("1..0 # SKIP no build (run through make check)")
    sys.exit(0)
if not os.access(dnsserver.UNBOUND, os.X_OK):
    print("1..0 # SKIP unbound is not installed")
    sys.exit(0)

fakes = []
unbound = None
status = 1
try:
    unbound = dnsserver.Unbound()
    env = dict(os.environ)
    env["RR_DNS_SERVER"] = "127.0.0.1:%d" % unbound.port
    env["RR_DNS_DEAD"] = "127.0.0.1:%d" % dnsserver.free_port()
    for mode in ("garbage", "badanswer", "servfail", "refused", "drop"):
        f = dnsserver.FakeDns(mode)
        fakes.append(f)
        env["RR_DNS_" + mode.upper()] = "127.0.0.1:%d" % f.port
    p = subprocess.run([binary, "--tap"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    out = p.stdout
    # the binary's TAP is ours; a crash after the plan must still fail
    sys.stdout.write(out)
    if p.returncode != 0:
        print("not ok 999 - t/unit/dns exited with %d" % p.returncode)
    # every fake server must have been asked (the tests did reach them)
    for f in fakes:
        if f.queries == 0:
            print("# fake server %s got no query" % f.mode)
    status = 0 if p.returncode == 0 else 1
finally:
    for f in fakes:
        f.stop()
    if unbound is not None:
        unbound.stop()
sys.exit(status)
