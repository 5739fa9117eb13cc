#!/usr/bin/env python3
# 85-postconf.t - one-step setup: `rapidretry-agent --postconf lmtp|pipe
# --apply -p DIR` configures a plain throw-away Postfix for that mode with
# postconf(1) alone, so that `postfix reload` is all that is left:
#   1. printed (no --apply): postconf commands, the Postfix files untouched;
#   2. --apply lmtp: master.cf has the spawn(8) and lmtp(8) services,
#      main.cf sends all mail through the socket; after a reload a message
#      goes out through the agent in LMTP mode (Postfix logs status=sent
#      with relay=...[private/rapidretry-lmtp]); `postfix check` is clean;
#   3. --apply again: master.cf and main.cf unchanged (idempotent);
#   3b. -t checks the LMTP pair (spawn service, lmtp client, XFORWARD,
#      time limits, qmgr's concurrency and slow start) and prints the
#      postconf command that fixes each finding;
#   4. --apply pipe: the "rapidretry" service becomes pipe(8), the next
#      message goes out through pipe mode; a bad mode is a usage error;
#   5. --apply daemon: the spawn service goes (the daemon binds its
#      socket), the lmtp(8) client sends to [lmtp] listen with qmgr at
#      [lmtp] workers; -t names the daemon and flags a master.cf service
#      on its socket; after a reload and the daemon's start a message goes
#      out through it; applied again, nothing changes.
import os
import re
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Postfix, Receiver, Sender, QID
from lmtpsender import LmtpDaemon

rrtest.require_root()
rrtest.agent_binary()

recv = Receiver("recv", domains=("d1.test",)).start()
agent = rrtest.Agent(name="agent", relay="[127.0.0.1]:%d" % recv.port)
# a plain sender: nothing of rapidretry's in its configuration
snd = Sender("snd", relay_port=recv.port, smtp=True, main={
    "default_transport": "smtp", "relayhost": "",
    "transport_maps": "inline:{src.test=discard:}"})
if rrtest.ASAN:
    snd.pass_environment(rrtest.asan_options())
snd.start()
MASTER = os.path.join(snd.etc, "master.cf")
MAIN = os.path.join(snd.etc, "main.cf")


def postconf(*args):
    return subprocess.run([agent.binary, "--postconf"] + list(args)
                          + ["-c", agent.conf, "-u", rrtest.TEST_USER,
                             "-p", snd.etc], capture_output=True, text=True)


def files():
    return rrtest.read_file(MASTER), rrtest.read_file(MAIN)


def deliver(rcpt, relay_re):
    """deliver - submit one message, wait for its status; the line."""
    mark = snd.mark()
    qid = snd.submit("s@src.test", [rcpt])
    st = rrtest.wait_until(lambda: snd.statuses(qid, mark), 60,
                           what="status of " + rcpt)
    lines = [l for l in snd.log_lines(mark)
             if re.search(r"%s: to=<%s>" % (qid, re.escape(rcpt)), l)]
    return (st[0] if st else None), (lines[0] if lines else "")


def client_and_check(master, n):
    """client_and_check - the lmtp(8) client in MASTER, qmgr's slow start
    at N, postfix check clean."""
    like(master, r"(?m)^rapidretry +unix +- +- +n +- +- +lmtp\n(\s+-o .*\n)*"
         r"\s+-o lmtp_send_xforward_command=yes", "master.cf: the lmtp(8) "
         "client with XFORWARD")
    like(files()[1], r"(?m)^rapidretry_initial_destination_concurrency = %d$"
         % n, "main.cf: qmgr starts the socket at its %d" % n)
    c = subprocess.run(["postfix", "-c", snd.etc, "check"],
                       capture_output=True, text=True)
    is_((c.returncode, c.stderr.strip()), (0, ""), "postfix check is clean")


# --- 1. printed -----------------------------------------------------------------
before = files()
p = postconf("lmtp")
is_(p.returncode, 0, "--postconf lmtp prints")
like(p.stdout, r"(?m)^postconf -c \S+ -M 'rapidretry-lmtp/unix=rapidretry-"
     r"lmtp unix - n n - 20 spawn user=%s argv=\S+ --lmtp -c \S+'$"
     % rrtest.TEST_USER, "the spawn(8) service, with this agent's path")
like(p.stdout, r"(?m)^postconf -c \S+ -e 'default_transport = rapidretry:"
     r"unix:private/rapidretry-lmtp'$", "all mail through the socket")
is_(files(), before, "printing changes nothing")

# --- 2. applied: LMTP mode ------------------------------------------------------------
p = postconf("lmtp", "--apply")
is_(p.returncode, 0, "--postconf lmtp --apply: %s" % (p.stderr.strip()
                                                       or p.stdout.strip()))
master, main = files()
like(master, r"(?m)^rapidretry-lmtp +unix +- +n +n +- +20 +spawn",
     "master.cf: the spawn(8) service")
client_and_check(master, 20)
ok(snd.postfix("reload"), "postfix reload")
st, line = deliver("l1@d1.test", "")
is_(st[2] if st else None, "sent", "after the reload: sent")
like(line, r"relay=\S+\[private/rapidretry-lmtp\]", "through the agent in "
     "LMTP mode")
ok("l1@d1.test" in recv.wait_delivered(1), "and in the receiver's Maildir")

# --- 3. idempotent ---------------------------------------------------------------------
p = postconf("lmtp", "--apply")
is_((p.returncode, files()), (0, (master, main)), "applied again: master.cf "
    "and main.cf unchanged")

# --- 3b. -t checks the LMTP pair and says what to change ---------------------------------


def check():
    return subprocess.run([agent.binary, "-t", "-c", agent.conf, "-p",
                           snd.etc], capture_output=True, text=True)


r = check()
is_(r.returncode, 0, "-t on the LMTP-mode Postfix: clean (%s)"
    % r.stderr.strip()[:300])
like(r.stdout, r"(?m)^# master\.cf: LMTP service rapidretry-lmtp \(spawn, "
     r"maxproc 20, user=%s\)$" % rrtest.TEST_USER, "-t names the spawn "
     "service")
like(r.stdout, r"(?m)^# master\.cf: LMTP client rapidretry \(lmtp\), "
     r"main\.cf default_transport$", "and the lmtp(8) client")
ok("no pipe(8)" not in r.stderr, "no warning about a missing pipe service")
for arg in (["-P", "rapidretry/unix/lmtp_send_xforward_command=no"],
            ["-e", "rapidretry_initial_destination_concurrency = 5"],
            ["-e", "rapidretry-lmtp_time_limit = 100s"]):
    subprocess.run(["postconf", "-c", snd.etc] + arg, check=True)
r = check()
is_(r.returncode, 78, "-t after three bad changes: an error (78)")
like(r.stderr, r"sends no XFORWARD.*postconf -c \S+ -P 'rapidretry/unix/"
     r"lmtp_send_xforward_command=yes'", "XFORWARD off: the warning says "
     "the postconf command")
like(r.stderr, r"rapidretry_initial_destination_concurrency = 5: all mail "
     r"is one destination", "qmgr's slow start at 5: warned")
like(r.stderr, r"\[lmtp\] time_limit: 1000s is above "
     r"rapidretry-lmtp_time_limit = 100s: spawn\(8\) would kill",
     "the spawn time limit below [lmtp] time_limit: an error")
postconf("lmtp", "--apply")
r = check()
is_((r.returncode, r.stderr.strip()), (0, ""), "--postconf lmtp --apply "
    "puts it right again: -t clean")
master, main = files()

# --- 4. pipe mode ------------------------------------------------------------------------
p = postconf("pipe", "--apply")
is_(p.returncode, 0, "--postconf pipe --apply")
master2, main2 = files()
like(master2, r"(?m)^rapidretry +unix +- +n +n +- +50 +pipe", "master.cf: "
     "the rapidretry service is pipe(8) now")
is_(len(re.findall(r"(?m)^rapidretry +unix", master2)), 1, "one rapidretry "
    "service")
like(main2, r"(?m)^default_transport = rapidretry:batch$", "main.cf: all "
     "mail in one batch queue")
ok(snd.postfix("reload"), "postfix reload")
st, line = deliver("p1@d1.test", "")
is_(st[2] if st else None, "sent", "pipe mode: sent")
like(line, r"relay=rapidretry,", "through pipe(8)")
p = postconf("smtp")
is_(p.returncode, 64, "a mode that does not exist: usage error (64)")

# --- 5. LMTP mode without spawn(8): --lmtp-daemon ---------------------------------------
sock = os.path.join(snd.queue, "private", "rapidretry-lmtp")
daemon = LmtpDaemon(agent, sock, workers=3)
p = postconf("daemon")
like(p.stdout, r"(?m)^postconf -c \S+ -MX 'rapidretry-lmtp/unix'$",
     "--postconf daemon removes the spawn service")
like(p.stdout, r"(?m)^postconf -c \S+ -e 'default_transport = rapidretry:"
     r"unix:private/rapidretry-lmtp'$", "[lmtp] listen in Postfix's "
     "private/: the short nexthop")
like(p.stderr, r"-u and --maxproc are for spawn\(8\) and pipe\(8\); the "
     r"daemon takes \[lmtp\] user \(%s\) and workers \(3\) from \S+"
     % rrtest.TEST_USER, "-u with daemon: it says where the user comes from")
like(p.stdout, r"(?m)^Then start the LMTP server: systemctl enable --now "
     r"rapidretry-lmtp \(or \S+ --lmtp-daemon -c \S+\)$",
     "and says to start the daemon")
p = postconf("daemon", "--apply")
is_(p.returncode, 0, "--postconf daemon --apply: %s" % (p.stderr.strip()
                                                         or p.stdout.strip()))
master, main = files()
ok(re.search(r"(?m)^rapidretry-lmtp\s", master) is None, "master.cf: no "
   "spawn(8) service on the daemon's socket")
like(main, r"(?m)^rapidretry_destination_concurrency_limit = 3$",
     "main.cf: qmgr's concurrency at [lmtp] workers")
client_and_check(master, 3)
p = postconf("daemon", "--apply")
is_((p.returncode, files()), (0, (master, main)), "applied again: master.cf "
    "and main.cf unchanged")
r = check()
is_((r.returncode, r.stderr.strip()), (0, ""), "-t on the daemon's "
    "Postfix: clean")
like(r.stdout, r"(?m)^# LMTP daemon: listen unix:\S+/private/rapidretry-"
     r"lmtp, 3 workers, user %s \(main\.cf default_transport sends to "
     r"unix:private/rapidretry-lmtp\)$" % rrtest.TEST_USER,
     "-t names the daemon and the transport that reaches it")
like(r.stdout, r"(?m)^# master\.cf: LMTP client rapidretry \(lmtp\)",
     "and the lmtp(8) client")
ok(snd.postfix("reload"), "postfix reload")
daemon.start()
st, line = deliver("d1@d1.test", "")
is_(st[2] if st else None, "sent", "through the daemon: sent")
like(line, r"relay=\S+\[private/rapidretry-lmtp\]", "by Postfix's lmtp(8)")
ok("d1@d1.test" in recv.wait_delivered(2), "and in the receiver's Maildir")
workers = daemon.pids()[1:]
ok(len(workers) == 3 and any(
    re.search(r"\[%d\]: \S+: to=<d1@d1\.test>.*status=sent" % w, l)
    for w in workers for l in agent.log_lines()),
   "the agent's line for it comes from one of the 3 workers")
daemon.stop()
subprocess.run(["postconf", "-c", snd.etc, "-M",
                "rapidretry-lmtp/unix=rapidretry-lmtp unix - n n - 1 spawn "
                "user=%s argv=/bin/true" % rrtest.TEST_USER], check=True)
subprocess.run(["postconf", "-c", snd.etc, "-e",
                "rapidretry_destination_concurrency_limit = 10"], check=True)
r = check()
is_(r.returncode, 78, "-t with a spawn service on the daemon's socket: an "
    "error (78)")
like(r.stderr, r"master\.cf service rapidretry-lmtp \(spawn\) listens on "
     r"private/rapidretry-lmtp too.*postconf -c \S+ -MX 'rapidretry-lmtp/"
     r"unix'", "it says which service and how to remove it")
like(r.stderr, r"rapidretry_destination_concurrency_limit = 10 is above "
     r"\[lmtp\] workers = 3", "qmgr above the workers: warned")
postconf("daemon", "--apply")
r = check()
is_((r.returncode, r.stderr.strip()), (0, ""), "--postconf daemon --apply "
    "puts it right again: -t clean")
done()
