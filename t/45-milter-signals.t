#!/usr/bin/env python3
# 45-milter-signals.t - rapidretry-milter and its signals (SIGHUP
# reloads, SIGTERM finishes cleanly). libmilter's own signal thread stops
# the milter on SIGHUP; the main thread must get every SIGHUP, also while
# it is busy reloading. A mixed flood of SIGHUP/SIGUSR1 from the moment
# the process has blocked them (its first lines of main) through start-up
# and while it serves: it keeps answering the milter protocol throughout;
# then SIGTERM: exit 0. A burst of SIGHUPs leaves the milter running and
# listening; SIGTERM and SIGINT end it with exit status 0.
import os
import signal
import socket
import struct
import sys
import threading
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, diag, done
import agentmilter as am
import rrmilter

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


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("milter closed the connection")
        data += chunk
    return data


def answers(path):
    """answers - one milter protocol exchange as an MTA starts it: option
    negotiation (version 6, Postfix's offer), the milter's 'O' reply, then
    quit. True when the reply came."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        body = b"O" + struct.pack(">III", 6, 0x1ff, 0x1fffff)
        s.sendall(struct.pack(">I", len(body)) + body)
        n = struct.unpack(">I", recv_exact(s, 4))[0]
        reply = recv_exact(s, n)
        s.sendall(struct.pack(">I", 1) + b"Q")
        return reply[:1] == b"O"
    except (OSError, EOFError):
        return False
    finally:
        s.close()


def blocked(pid):
    """blocked - SIGHUP, SIGINT, SIGUSR1 and SIGTERM are in the process's
    blocked mask (/proc/PID/status SigBlk)"""
    want = sum(1 << (n - 1) for n in (signal.SIGHUP, signal.SIGINT,
                                      signal.SIGUSR1, signal.SIGTERM))
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16) & want == want
    except OSError:
        pass
    return False


# --- a flood of SIGHUP/SIGUSR1 from the start ---------------------------
f = rrmilter.Milter(rrtest.subdir("flood"), "[milter]\nmode = strict\n")
f.launch()
t0 = time.monotonic()
while not blocked(f.proc.pid) and f.proc.poll() is None and \
        time.monotonic() - t0 < 10:
    pass                                    # no sleep: the earliest moment
flooding = True
flood_sent = [0]


def flood():
    sigs = (signal.SIGHUP, signal.SIGUSR1)
    while flooding:
        try:
            os.kill(f.proc.pid, sigs[flood_sent[0] % 2])
        except OSError:
            return
        flood_sent[0] += 1


th = threading.Thread(target=flood)
th.start()
up = rrtest.wait_until(lambda: f.proc.poll() is not None or
                       "started:" in f.read_log(), 20, what="start")
ok(up and f.proc.poll() is None,
   "flooded from the first lines of main: the milter starts")
good = bad = 0
end = time.monotonic() + 2
while time.monotonic() < end and f.proc.poll() is None:
    if answers(f.socket):
        good += 1
    else:
        bad += 1
flooding = False
th.join()
diag("%d signals sent, %d protocol exchanges answered, %d not" %
     (flood_sent[0], good, bad))
ok(good > 0 and bad == 0, "it answered every exchange during the flood "
   "(%d)" % good)
ok(reloads(f) >= 1, "the flood made it reload (%d times)" % reloads(f))
ok(answers(f.socket), "it still answers after the flood")
f.signal(signal.SIGTERM)
rrtest.wait_until(lambda: f.proc.poll() is not None, 15,
                  what="exit after SIGTERM")
is_(f.proc.poll(), 0, "SIGTERM after the flood: exit status 0")
log = f.read_log()
ok("libmilter stopped" not in log and "did not call sigwait" not in log,
   "libmilter's signal thread took no signal", log[-1500:])


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
ok(am.sanitizer_free(m) and am.sanitizer_free(m2) and am.sanitizer_free(f),
   "no sanitizer reports from the milter")
done()
