#!/usr/bin/env python3
# 45-milter-signals.t - rapidretry-milter and its signals (issue: SIGHUP
# reloads, SIGTERM finishes cleanly). libmilter's own signal thread stops
# the milter on SIGHUP; the main thread must get every SIGHUP, also while
# it is busy reloading. A burst of SIGHUPs leaves the milter running and
# listening; SIGTERM and SIGINT end it with exit status 0.
import os
import signal
import socket
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
import agentmilter as am

rrtest.require_root()
am.need_milter()


def listening(path):
    """listening - libmilter accepts connections on the unix socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def reloads(m):
    return m.read_log().count("configuration reloaded")


m = am.start_milter("sig", "strict")
ok(listening(m.socket), "the milter listens on %s" % m.socket)

# one SIGHUP: one reload
m.signal(signal.SIGHUP)
ok(rrtest.wait_until(lambda: reloads(m) >= 1, 10, what="first reload"),
   "SIGHUP: configuration reloaded")

# a stream of SIGHUPs for half a second: many arrive while the main
# thread is reloading
sent = 0
end = time.monotonic() + 0.5
while time.monotonic() < end and m.proc.poll() is None:
    os.kill(m.proc.pid, signal.SIGHUP)
    sent += 1
n = rrtest.wait_until(lambda: reloads(m) >= 2 and reloads(m), 10,
                      what="reloads after the stream")
ok(n, "%d SIGHUPs in 0.5 s: reloaded (%s times in all)" % (sent, n))
before = reloads(m)
m.signal(signal.SIGHUP)
ok(rrtest.wait_until(lambda: reloads(m) > before, 10, what="last reload"),
   "a SIGHUP after the stream still reloads")
is_(m.proc.poll(), None, "the milter still runs after the stream")
ok(listening(m.socket), "libmilter still accepts connections")
ok("libmilter stopped" not in m.read_log(),
   "libmilter's own signal thread did not take a SIGHUP")

# SIGTERM: a clean end
m.signal(signal.SIGTERM)
rc = rrtest.wait_until(lambda: m.proc.poll() is not None, 15,
                       what="exit after SIGTERM")
is_(m.proc.poll(), 0, "SIGTERM: exit status 0")
ok("stopping on signal 15" in m.read_log(), "SIGTERM: logged")
ok("exit" in m.read_log().split("stopping on signal 15", 1)[-1],
   "SIGTERM: the counters are logged at exit")

# SIGINT likewise
m2 = am.start_milter("sigint", "strict")
m2.signal(signal.SIGINT)
rrtest.wait_until(lambda: m2.proc.poll() is not None, 15,
                  what="exit after SIGINT")
is_(m2.proc.poll(), 0, "SIGINT: exit status 0")
if m.proc.poll() != 0 or m2.proc.poll() != 0:
    diag(m.read_log()[-2000:])
    diag(m2.read_log()[-2000:])
ok(am.sanitizer_free(m) and am.sanitizer_free(m2),
   "no sanitizer reports from the milter")
done()
