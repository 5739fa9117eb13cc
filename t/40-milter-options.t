#!/usr/bin/env python3
"""40-milter-options.t - rapidretry-milter's command line without an MTA:
-V, -n on good and bad configs (exit 78, FILE:LINE on stderr) and the
settings it prints, -n's checks of socket, user and stats_file, a missing
default configuration file (the defaults, one log line), bad socket
specs, a socket path in use, a stale socket file, SIGTERM ends cleanly
with the counters logged."""

import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, done
import rrmilter

MILTER = rrmilter.binary()


def run(*args, timeout=20):
    return subprocess.run([MILTER] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


d = rrtest.subdir("opt")


def write(name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


r = run("-V")
ok(r.returncode == 0 and r.stdout.startswith("rapidretry-milter "),
   "-V prints the version", r.stdout + r.stderr)

write("classes", "# classes\nboss@x.test vip\n@x.test staff\n"
      "y.test partners\ndefault other\n")
good = write("good.conf", "[milter]\nmode = policy\nclass_map = classes\n"
             "exempt_networks = 127.0.0.0/8, ::1/128\n"
             "exempt_daemons = submission\nstats_interval = 1m\n"
             "\n[agent]\nsomething = for the agent\n")
r = run("-n", "-c", good)
ok(r.returncode == 0, "-n: good config exits 0", r.stderr)
KEYS = ("mode", "class_map", "exempt_networks", "exempt_authenticated",
        "exempt_daemons", "exempt_notify_never", "reply_text", "reply_code",
        "stats_interval", "stats_file")
shown = dict(l.split(" = ", 1) for l in r.stdout.splitlines()
             if " = " in l and not l.startswith("#"))
ok(sorted(shown) == sorted(KEYS), "-n prints every [milter] key once",
   r.stdout)
ok(shown.get("mode") == "policy" and shown.get("stats_interval") == "1m" and
   shown.get("exempt_networks") == "127.0.0.0/8, ::1/128",
   "-n: the values set in the file", r.stdout)
dflt = r.stdout.split("# defaults (not set in the file):\n", 1)[-1]
ok(shown.get("reply_code") == "451" and "\nreply_code = 451\n" in dflt
   and "mode = " not in dflt, "-n: defaults listed as such", r.stdout)
ok(r.stdout.rstrip().endswith("# configuration OK"), "-n: says OK",
   r.stdout)
p452 = write("r452.conf", "[milter]\nreply_code = 452\n")
r = run("-n", "-c", p452)
ok(r.returncode == 0 and "\nreply_code = 452\n" in r.stdout,
   "-n: reply_code = 452 accepted", r.stdout + r.stderr)
sf = write("sf.conf", "[milter]\nstats_file = %s/nodir/m.prom\n" % d)
for args, want, name in (
        (["-c", good, "-p", "inet:99999@127.0.0.1"], "-p: bad socket",
         "a bad -p socket"),
        (["-c", good, "-u", "no-such-user-rr"], "-u: unknown user",
         "an unknown -u user"),
        (["-c", good, "-u", "nobody:no-such-group-rr"], "unknown group",
         "an unknown -u group"),
        (["-c", sf], "sf.conf: stats_file: directory %s/nodir" % d,
         "stats_file in a missing directory")):
    r = run("-n", *args)
    ok(r.returncode == 78 and want in r.stderr,
       "-n: %s -> exit 78, %s" % (name, want),
       "exit %d: %s" % (r.returncode, r.stderr))
r = run("-n", "-c", good, "-p", "unix:%s/m.sock" % d, "-u", "nobody")
ok(r.returncode == 0 and "socket unix:%s/m.sock, user nobody" % d in
   r.stdout, "-n: a good socket and user pass", r.stdout + r.stderr)

# no -c and no default file: the defaults, one log line, no exit
if os.path.exists("/etc/rapidretry/rapidretry.conf"):
    rrtest.skip("the default configuration file exists here", 3)
else:
    r = run("-n")
    ok(r.returncode == 0 and "\nmode = strict\n" in r.stdout,
       "-n without the default file: the built-in defaults",
       r.stdout + r.stderr)
    ok(r.stderr.count("does not exist: using the built-in defaults") == 1,
       "-n without the default file: one log line", r.stderr)
    nd = subprocess.Popen([MILTER, "-f", "-p", "unix:%s/nd.sock" % d],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    up = rrtest.wait_until(lambda: os.path.exists("%s/nd.sock" % d), 10)
    nd.send_signal(signal.SIGTERM)
    out = nd.communicate(timeout=15)[0]
    ok(up and nd.returncode == 0 and
       "does not exist: using the built-in defaults" in out,
       "the daemon without the default file runs on the defaults",
       "exit %s: %s" % (nd.returncode, out))

bad = [
    ("unparseable", "[milter\nmode = strict\n", "bad1.conf:1:"),
    ("unknown key", "[milter]\nmood = strict\n", "bad2.conf:2:"),
    ("bad mode", "[milter]\n\nmode = loose\n", "bad3.conf:3:"),
    ("missing class map", "[milter]\nmode = policy\nclass_map = nope\n",
     "bad4.conf:3: class_map: cannot read"),
    ("policy without map", "[milter]\nmode = policy\n", "bad5.conf:2:"),
    ("bad network", "[milter]\nexempt_networks = 127.0.0.0/8\n"
     "exempt_networks = 10.0.0.1/8\n", "bad6.conf:3:"),
    ("lone %", "[milter]\nreply_text = 100% sure\n", "bad7.conf:2:"),
    ("bad time", "[milter]\nstats_interval = soon\n", "bad8.conf:2:"),
    ("key outside section", "mode = strict\n", "bad9.conf:1:"),
    ("bad class map line", "[milter]\nmode = policy\n"
     "class_map = badmap\n", "badmap:2: expected"),
    ("bad reply_code", "[milter]\n\nreply_code = 450\n",
     "bad11.conf:3: reply_code"),
    ("relative stats_file", "[milter]\nstats_file = m.prom\n",
     "bad12.conf:2: stats_file"),
]
write("badmap", "a@x.test one\nb@x.test\n")
for i, (name, text, want) in enumerate(bad, 1):
    p = write("bad%d.conf" % i, text)
    r = run("-n", "-c", p)
    ok(r.returncode == 78 and want in r.stderr,
       "-n: %s -> exit 78, %s" % (name, want),
       "exit %d: %s" % (r.returncode, r.stderr))
r = run("-n", "-c", os.path.join(d, "absent.conf"))
ok(r.returncode == 78 and "absent.conf" in r.stderr,
   "-n: missing config file -> 78", r.stderr)
long_text = "x" * 503
p = write("long.conf", "[milter]\nreply_text = %s\n" % long_text)
r = run("-n", "-c", p)
ok(r.returncode == 78 and "long.conf:2:" in r.stderr,
   "-n: reply text over 512 octets -> 78", r.stderr)
# a NUL byte is an error at its line, also when the milter starts
p = write("nul.conf", "[milter]\nmode = strict\0\nmode = loose\n")
for args in (["-n"], ["-f", "-p", "inet:%d@127.0.0.1" % rrtest.free_port()]):
    r = run(*args, "-c", p)
    ok(r.returncode == 78 and "nul.conf:2: NUL byte" in r.stderr,
       "%s: NUL byte in the config -> exit 78, FILE:LINE" % args[0],
       "exit %d: %s" % (r.returncode, r.stderr))
write("nulmap", "a@x.test one\nb@x.test two\0\nc@x.test\n")
p = write("nulmap.conf", "[milter]\nmode = policy\nclass_map = nulmap\n")
r = run("-n", "-c", p)
ok(r.returncode == 78 and "nulmap:2: NUL byte" in r.stderr,
   "-n: NUL byte in the class map -> exit 78, FILE:LINE",
   "exit %d: %s" % (r.returncode, r.stderr))
p = write("fits.conf", "[milter]\nreply_text = %s\n" % long_text[:-1])
r = run("-n", "-c", p)
ok(r.returncode == 0, "-n: reply text of exactly 512 octets ok",
   r.stderr)

for spec in ("bogus", "inet:", "inet:99999@127.0.0.1", "inet:25@",
             "unix:relative/path", "tcp:25"):
    r = run("-f", "-p", spec, "-c", good)
    ok(r.returncode == 64 and "bad socket" in r.stderr,
       "bad socket spec %r -> exit 64" % spec, r.stderr)
r = run("-f", "-c", good)
ok(r.returncode == 64 and "usage" in r.stderr, "no -p -> usage")

# a socket path in use by another process is left alone
busy = os.path.join(d, "busy.sock")
ls = socket.socket(socket.AF_UNIX)
ls.bind(busy)
ls.listen(1)
r = run("-f", "-p", "unix:" + busy, "-c", good)
ok(r.returncode == 69 and "in use" in r.stderr,
   "socket path in use -> exit 69", r.stderr)
ok(os.path.exists(busy), "the busy socket was not removed")
ls.close()

# a stale socket file (nobody listening) is replaced; SIGTERM is clean
log = open(os.path.join(d, "run.log"), "w")
p = subprocess.Popen([MILTER, "-f", "-p", "unix:" + busy, "-c", good,
                      "-P", os.path.join(d, "pid")],
                     stdout=log, stderr=subprocess.STDOUT)


def live():
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(busy)
        return True
    except OSError:
        return False
    finally:
        s.close()


ok(rrtest.wait_until(live, 10), "stale socket replaced, milter listens")
ok(rrtest.wait_until(lambda: os.path.exists(os.path.join(d, "pid")), 5) and
   open(os.path.join(d, "pid")).read().strip() == str(p.pid),
   "-P writes the pid file")
p.send_signal(signal.SIGTERM)
try:
    rc = p.wait(15)
except subprocess.TimeoutExpired:
    p.kill()
    rc = p.wait()
log.close()
text = open(os.path.join(d, "run.log")).read()
ok(rc == 0, "SIGTERM: exit 0", "exit %s\n%s" % (rc, text))
ok("statistics (exit): transactions=0" in text,
   "counters logged at exit", text)
ok(not os.path.exists(os.path.join(d, "pid")), "pid file removed")
ok(not rrtest.sanitizer_report(text),
   "no sanitizer reports")
done()
