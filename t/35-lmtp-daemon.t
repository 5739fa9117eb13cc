#!/usr/bin/env python3
# 35-lmtp-daemon.t - rapidretry-agent --lmtp-daemon through real Postfix
# (DESIGN §9): sender Postfix -> its "rapidretry" lmtp client -> unix
# socket private/rapidretry-lmtp -> a resident worker of the daemon (no
# spawn(8) service in master.cf) -> receiver:
#   1. limit-3 receiver, 20 recipients in 2 domains plus three
#      1-recipient messages: status=sent for each through the socket,
#      each delivered once; the agent's lines come from the workers, as
#      many as [lmtp] workers, the workers running as the [lmtp] user (the parent stays root); socket 0666;
#   2. a burst of 30 held messages released at once (more LMTP sessions
#      than workers): all sent, none deferred, the same workers;
#   3. an idle worker SIGKILLed: the parent starts another in its place
#      and logs it; mail goes on;
#   4. SIGHUP: a session in the middle of a message finishes it with the
#      old configuration, then gets 421 4.3.2; all workers replaced, new
#      helo_name in the receiver's Received: header and the LMTP greeting,
#      new [lmtp] workers count; a broken configuration (workers = 0) is
#      refused: the same workers go on;
#   5. SIGTERM: an open session gets 421 4.3.2, exit 0 soon, workers
#      gone, the socket removed; mail sent meanwhile is deferred (not
#      bounced) and, after a new start and a flush, delivered once;
#   6. start-up errors, the binary run directly as root: a bad listen
#      spec, a path another daemon serves (that one keeps serving), a path
#      that is no socket, an unknown user, user root, a missing config,
#      a config error: exit 1 and a reason on stderr; a stale socket is
#      replaced; inet:HOST:PORT listens.
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver, QID
from lmtpsender import LmtpSender, sockets
from lmtpclient import LmtpAgent, stuff

rrtest.require_root()
rrtest.agent_binary()

N = 2                   # [lmtp] workers
UID = rrtest.ensure_user().pw_uid
RCPTS = (["a%02d@d1.test" % i for i in range(1, 11)]
         + ["b%02d@d2.test" % i for i in range(1, 11)])
held = rrtest.write_file(os.path.join(rrtest.tmpdir(), "header_checks"),
                         "/^Subject: held burst/ HOLD\n")
MAIN = {
    # the sender's own bounces stay local: src.test is discarded
    "transport_maps": "inline:{src.test=discard:}",
    # section 2's burst: held at cleanup, released together
    "header_checks": "regexp:" + held,
    "initial_destination_concurrency": "20",
}
STATUS = re.compile(r"/lmtp\[(\d+)\]: (%s): to=<([^>]+)>, relay=(\S+),.* "
                    r"dsn=[\d.]+, status=(\w+) " % QID)
AGENT = re.compile(r"rapidretry-lmtp\[(\d+)\]: (\S+): to=<([^>]*)>,.* "
                   r"status=(\w+)")


class SockClient(LmtpAgent):
    """SockClient - lmtpclient's LMTP client on a connection to the
    daemon's socket (no agent process of its own)."""

    def __init__(self, path, timeout=20):
        self.agent, self.proc = None, None
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = self.raw = b""
        self.timeout = timeout
        rrtest.at_cleanup(self.sock.close)

    def kill(self):
        self.sock.close()


def statuses(snd, since=0):
    """statuses - Postfix's lmtp client lines from SINCE on:
    [(lmtp pid, qid, rcpt, relay, status)]."""
    return [m.groups() for m in map(STATUS.search, snd.log_lines(since))
            if m]


def wait_statuses(snd, n, since, what):
    return rrtest.wait_until(lambda: len(statuses(snd, since)) >= n
                             and statuses(snd, since), 60, what=what) or []


def agent_lines(snd, since=0):
    """agent_lines - the agent's per-recipient lines after the first SINCE
    lines of its log: [(pid, qid, rcpt, status)]."""
    return [m.groups() for m in map(AGENT.search,
                                    snd.agent_log()[since:]) if m]


def workers(snd):
    return sorted(snd.daemon.pids()[1:])


def uid(pid):
    m = re.search(r"^Uid:\s+(\d+)", rrtest.read_file("/proc/%d/status" % pid),
                  re.M)
    return int(m.group(1)) if m else None


def idle_workers(snd):
    """idle_workers - workers holding no socket but the listening one
    (the parent's only socket): in accept, not in an LMTP session."""
    lsock = sockets(snd.daemon.proc.pid)
    return [p for p in workers(snd) if sockets(p) == lsock]


def alive(pid):
    st = rrtest.read_file("/proc/%d/stat" % pid)
    return bool(st) and st.split(") ", 1)[-1][:1] not in ("Z", "X", "")


def submit_n(snd, rcpts, subject="rapidretry test", smtp=False):
    """submit_n - one message per recipient: their queue ids (SMTP:
    through the sender's smtpd, so XFORWARD IDENT has the queue id)."""
    how = snd.submit_smtp if smtp else snd.submit
    return [how("s@src.test", [r], rrtest.sample_message(
        "s@src.test", [r], subject=subject)) for r in rcpts]


def received_helo(recv, rcpt):
    """received_helo - the HELO name in the top Received: header of the
    message delivered to RCPT."""
    for _, text in recv.messages():
        head = text.split("\n\n", 1)[0]
        if re.search(r"^Delivered-To: %s$" % re.escape(rcpt), head,
                     re.M | re.I):
            m = re.search(r"^Received: from (\S+) ", head, re.M)
            return m.group(1) if m else None
    return None


def deliver(snd, recv, rcpts, what):
    """deliver - RCPTS (one message each) through the daemon: (all sent
    through the socket, each delivered once)."""
    mark, before = snd.mark(), recv.delivered()
    submit_n(snd, rcpts)
    st = wait_statuses(snd, len(rcpts), mark, what)
    recv.wait_delivered(len(before) + len(rcpts))
    new = list(recv.delivered())
    for r in before:
        new.remove(r)
    return (sorted((r, rel, s) for p, q, r, rel, s in st)
            == sorted((r, "snd.test[private/rapidretry-lmtp]", "sent")
                      for r in rcpts), sorted(new) == sorted(rcpts))


# --- 1. limit 3, 20 recipients, through the workers ---------------------------
recv = Receiver("recv", main={"smtpd_recipient_limit": "3"}).start()
snd = LmtpSender("snd", relay_port=recv.port, main=MAIN, daemon=True,
                 workers=N).start()
sock = snd.daemon.sock
master = rrtest.read_file(os.path.join(snd.etc, "master.cf"))
ok(re.search(r"(?m)^rapidretry\s+unix\s.*\slmtp$", master)
   and not re.search(r"(?m)^\S+\s+unix\s.*\sspawn$", master),
   "master.cf: the rapidretry lmtp client, no spawn(8) service")
like("\n".join(snd.agent_log()), r"rapidretry-lmtp\[%d\]: LMTP daemon "
     r"listening on unix:%s, %d workers" % (snd.daemon.proc.pid,
                                            re.escape(sock), N),
     "the parent logs its socket and workers")
st0 = os.stat(sock)
ok(stat.S_ISSOCK(st0.st_mode) and stat.S_IMODE(st0.st_mode) == 0o666,
   "the socket is mode 0666", "mode %o" % st0.st_mode)
w1 = rrtest.wait_until(lambda: len(workers(snd)) == N and workers(snd), 10)
is_(len(workers(snd)), N, "%d worker processes" % N)
is_([uid(p) for p in snd.daemon.pids()], [0] + [UID] * N,
    "the parent stays root (it removes the socket), the workers run as %s"
    % rrtest.TEST_USER)

amark, mark = len(snd.agent_log()), snd.mark()
qid = snd.submit_smtp("s@src.test", RCPTS)
ok(qid, "message queued at the sender: %s" % qid)
singles = ["s1@d1.test", "s2@d2.test", "s3@d1.test"]
q1 = submit_n(snd, singles, smtp=True)
st = wait_statuses(snd, 23, mark, "23 statuses from the lmtp client")
rrtest.wait_until(snd.queue_empty, 10, what="empty sender queue")
good = is_(sorted(r for p, q, r, rel, s in st if q == qid and s == "sent"),
           sorted(RCPTS), "status=sent for all 20 of the big message")
good &= is_(sorted(r for p, q, r, rel, s in st if q in q1 and s == "sent"),
            sorted(singles), "status=sent for the three 1-recipient ones")
good &= is_(sorted(set(rel for p, q, r, rel, s in st)),
            ["snd.test[private/rapidretry-lmtp]"],
            "all through private/rapidretry-lmtp, nothing else logged")
good &= is_(recv.wait_delivered(23), sorted(RCPTS + singles),
            "the receiver got each of the 23 exactly once")
good &= ok(snd.queue_empty(), "the sender's queue is empty")
al = agent_lines(snd, amark)
good &= is_(sorted((q, r, s) for p, q, r, s in al),
            sorted([(qid, r, "sent") for r in RCPTS]
                   + [(q, r, "sent") for q, r in zip(q1, singles)]),
            "the agent logged the 23 sent, under Postfix's queue ids")
apids = sorted(set(int(p) for p, q, r, s in al))
good &= ok(apids and set(apids) <= set(w1),
           "the agent's lines come from the workers %s" % w1,
           "pids in the log: %s" % apids)
good &= ok(not [l for l in snd.log_lines() if re.search(r"/spawn\[", l)],
           "no spawn(8) process ran")
is_(workers(snd), w1, "the same %d workers afterwards" % N)
if not good:
    diag("\n".join(snd.log_lines(mark)[-40:]))
    diag("\n".join(snd.agent_log()[-40:]))

# --- 2. a burst: more LMTP sessions than workers -----------------------------
burst = ["u%02d@d%d.test" % (i, i % 2 + 1) for i in range(30)]
hmark = snd.mark()
submit_n(snd, burst, subject="held burst")
held_n = len(snd.wait_log(r": hold: header Subject: held burst", since=hmark,
                          count=30))
is_(held_n, 30, "30 messages on hold")
before, mark, amark = recv.delivered(), snd.mark(), len(snd.agent_log())
t0 = time.monotonic()
subprocess.run(["postsuper", "-c", snd.etc, "-H", "ALL"],
               capture_output=True)
snd.flush()
st = wait_statuses(snd, 30, mark, "the burst's 30 statuses")
wall = time.monotonic() - t0
is_(sorted((r, s) for p, q, r, rel, s in st), [(r, "sent") for r in
                                               sorted(burst)],
    "all 30 sent, none deferred")
clients = len(set(p for p, q, r, rel, s in st))
ok(clients > N, "Postfix ran %d lmtp clients at once for %d workers"
   % (clients, N))
new = list(recv.wait_delivered(len(before) + 30))
for r in before:
    new.remove(r)
is_(sorted(new), sorted(burst), "the receiver got each of the 30 once")
ok(not [l for l in snd.log_lines(mark) if "status=deferred" in l],
   "nothing deferred during the burst")
is_(workers(snd), w1, "still the same %d workers" % N)
ok(set(int(p) for p, q, r, s in agent_lines(snd, amark)) <= set(w1),
   "the burst served by them")
diag("burst: 30 messages in %.1fs, %d lmtp clients" % (wall, clients))

# --- 3. a worker killed: another takes its place -------------------------------
idle = rrtest.wait_until(lambda: idle_workers(snd), 15,
                         what="an idle worker") or [0]
victim = idle[0]
os.kill(victim, signal.SIGKILL)
w3 = rrtest.wait_until(lambda: victim not in workers(snd)
                       and len(workers(snd)) == N and workers(snd), 10,
                       what="a new worker") or []
is_(len(w3), N, "%d workers again after SIGKILL of %d" % (N, victim))
is_(len(set(w3) - set(w1)), 1, "one new worker")
is_(sorted(set(w1) - set(w3)), [victim], "the killed one gone, the other "
    "unchanged")
ok(rrtest.wait_until(lambda: [
    l for l in snd.agent_log() if "worker %d ended (signal 9); starting "
    "another" % victim in l], 5), "the parent logged it")
sent, once = deliver(snd, recv, ["k1@d1.test", "k2@d2.test"],
                     "mail after the kill")
ok(sent and once, "mail after it: sent and delivered once")

# --- 4. SIGHUP: reload --------------------------------------------------------
w4 = workers(snd)
c = SockClient(sock)
like(c.line(), r"^220 sender\.test LMTP", "an LMTP session of our own: "
     "greeting with the old helo_name")
like(c.cmd("LHLO client.test"), r"^250-", "LHLO")
is_([c.cmd("MAIL FROM:<s@src.test>"), c.cmd("RCPT TO:<mid@d1.test>")],
    ["250 2.1.0 Ok", "250 2.1.5 Ok"], "MAIL and RCPT accepted")
amark = len(snd.agent_log())
snd.agent.settings["helo_name"] = "reloaded.test"
snd.daemon.write_conf(workers=str(N + 1))
snd.daemon.signal(signal.SIGHUP)
ok(rrtest.wait_until(lambda: [l for l in snd.agent_log()[amark:]
                              if "configuration reloaded, %d workers"
                              % (N + 1) in l], 10),
   "the parent logged the reload")
time.sleep(1.5)     # the worker has seen the SIGHUP in the message
like(c.cmd("DATA"), r"^354 ", "DATA after the SIGHUP: 354")
c.send(stuff(rrtest.sample_message("s@src.test", ["mid@d1.test"])) + ".\r\n")
like(c.line(30), r"^250 2\.0\.0 <mid@d1\.test>: ", "the message under way "
     "delivered")
like(c.line(10), r"^421 4\.3\.2 .*Service closing transmission channel",
     "then 421 4.3.2, between messages")
ok(c.eof(5), "and the connection closed")
c.kill()
w4b = rrtest.wait_until(lambda: len(workers(snd)) == N + 1
                        and not set(workers(snd)) & set(w4)
                        and workers(snd), 10, what="new workers") or []
is_(len(w4b), N + 1, "%d workers, as the new configuration says" % (N + 1))
ok(w4b and not set(w4b) & set(w4), "all of them new", "old %s new %s"
   % (w4, w4b))
is_(rrtest.wait_until(lambda: received_helo(recv, "mid@d1.test"), 15),
    "sender.test",
    "the message under way went out with the old helo_name")
sent, once = deliver(snd, recv, ["h1@d1.test", "h2@d2.test"],
                     "mail after the reload")
ok(sent and once, "mail after the reload: sent and delivered once")
is_([received_helo(recv, r) for r in ("h1@d1.test", "h2@d2.test")],
    ["reloaded.test"] * 2, "with the new helo_name in Received:")
c = SockClient(sock)
like(c.line(), r"^220 reloaded\.test LMTP", "the new LMTP greeting")
c.kill()
# a broken configuration: refused, the running one stays
amark = len(snd.agent_log())
snd.daemon.write_conf(workers="0")
snd.daemon.signal(signal.SIGHUP)
like("\n".join(rrtest.wait_until(lambda: [
    l for l in snd.agent_log()[amark:] if "reload refused" in l], 10) or []),
    r"reload refused, the running configuration stays: .*workers 0 is not "
    r"within 1\.\.1000", "workers = 0: the reload refused, logged")
time.sleep(1.2)     # room for a wrong restart of the workers
is_(workers(snd), sorted(w4b), "the same workers go on")
ok(not [l for l in snd.agent_log()[amark:] if "configuration reloaded" in l],
   "no reload logged")
sent, once = deliver(snd, recv, ["h3@d1.test"], "mail after the refusal")
ok(sent and once, "mail after the refused reload: sent, delivered once")
is_(received_helo(recv, "h3@d1.test"), "reloaded.test",
    "still with the reloaded configuration")
snd.daemon.write_conf(workers=str(N + 1))

# --- 5. SIGTERM ---------------------------------------------------------------
w5 = workers(snd)
c = SockClient(sock)
c.line()
like(c.cmd("LHLO client.test"), r"^250-", "a session of our own: LHLO")
amark = len(snd.agent_log())
t0 = time.monotonic()
rc = snd.daemon.stop()
took = time.monotonic() - t0
is_(rc, 0, "SIGTERM: exit status 0")
ok(took < 5, "within %.2fs" % took)
like(c.line(5), r"^421 4\.3\.2 .*Service shutting down", "our session got "
     "421 4.3.2")
ok(c.eof(5), "and was closed")
c.kill()
ok(not [p for p in w5 if alive(p)], "the workers are gone")
ok(not os.path.lexists(sock), "the socket is removed")
like("\n".join(snd.agent_log()[amark:]), r"LMTP daemon stopping: .*\n"
     r"(.*\n)*.*LMTP daemon stopped$", "logged: stopping, stopped")
mark = snd.mark()
qd = snd.submit("s@src.test", ["down@d2.test"])
st = wait_statuses(snd, 1, mark, "the attempt while down")
like(st[0][4] if st else "", r"^deferred$", "mail sent meanwhile: deferred")
like("\n".join(l for l in snd.log_lines(mark) if "status=" in l),
     r"to=<down@d2\.test>, relay=none, .*status=deferred \(connect to "
     r"snd\.test\[private/rapidretry-lmtp\]: (No such file or directory|"
     r"Connection refused)\)", "... with the connect error")
ok("down@d2.test" in snd.queued_rcpts(), "it waits in the queue")
ok(not [l for l in snd.log_lines(mark) if "status=bounced" in l
        or "non-delivery notification" in l], "nothing bounced")
snd.daemon.start()
is_(len(rrtest.wait_until(lambda: len(workers(snd)) == N + 1
                          and workers(snd), 10) or []), N + 1,
    "started again: %d workers" % (N + 1))
mark = snd.mark()
snd.flush()
st = wait_statuses(snd, 1, mark, "the retry")
is_([(r, s) for p, q, r, rel, s in st], [("down@d2.test", "sent")],
    "after a flush: sent")
rrtest.wait_until(lambda: "down@d2.test" in recv.delivered(), 15)
is_(recv.delivered().count("down@d2.test"), 1, "delivered once")
ok(rrtest.wait_until(snd.queue_empty, 10), "the queue is empty")

# --- 6. start-up errors --------------------------------------------------------
direct = rrtest.Agent(name="direct", relay="[127.0.0.1]:9")
ddir = rrtest.subdir("direct/sock", owner=rrtest.TEST_USER)


def conf_lmtp(**kv):
    lines = dict(listen="unix:" + os.path.join(ddir, "lmtp"), workers="1",
                 user=rrtest.TEST_USER)
    lines.update(kv)
    direct.write_conf(extra_text="\n[lmtp]\n" + "".join(
        "%s = %s\n" % x for x in lines.items()))
    return direct.conf


def run_direct(conf):
    """run_direct - the daemon as root, expected to fail at once:
    (exit status, stderr)."""
    try:
        p = subprocess.run([direct.binary, "--lmtp-daemon", "-c", conf],
                           capture_output=True, text=True, env=direct.env(),
                           timeout=15)
        return p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        return "still running after 15s", ""


def start_direct(conf):
    return subprocess.Popen([direct.binary, "--lmtp-daemon", "-c", conf],
                            env=direct.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop_direct(p):
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


PFX = r"^rapidretry-agent --lmtp-daemon: "
rc, err = run_direct(conf_lmtp(listen="tcp:foo"))
is_(rc, 1, "listen = tcp:foo: exit 1")
like(err, PFX + r"\[lmtp\] listen \"tcp:foo\": not unix:PATH or "
     r"inet:HOST:PORT\n$", "... stderr names the spec")
w6 = snd.daemon.pids()
rc, err = run_direct(conf_lmtp(listen="unix:" + sock))
is_(rc, 1, "the socket of a running daemon: exit 1")
like(err, PFX + re.escape(sock) + r": another server is listening there\n$",
     "... \"another server is listening there\"")
ok(os.path.exists(sock) and snd.daemon.answers(), "the running one still "
   "answers on its socket")
is_(snd.daemon.pids(), w6, "... with the same processes")
sent, once = deliver(snd, recv, ["m1@d1.test"], "mail after the clash")
ok(sent and once, "... and delivers mail")
plain = rrtest.write_file(os.path.join(ddir, "plain"), "")
rc, err = run_direct(conf_lmtp(listen="unix:" + plain))
ok(rc == 1 and re.search(PFX + re.escape(plain) + r" exists and is not a "
                         r"socket", err), "a plain file there: exit 1, "
   "\"is not a socket\"", "rc %r stderr %r" % (rc, err))
rc, err = run_direct(conf_lmtp(user="nosuchuser-xyz"))
is_(rc, 1, "user = nosuchuser-xyz: exit 1")
like(err, PFX + r"\[lmtp\] user \"nosuchuser-xyz\": no such user",
     "... stderr names the user")
rc, err = run_direct(conf_lmtp(user="root", listen="unix:" +
                               os.path.join(ddir, "lmtp-root")))
ok(rc == 1 and re.search(PFX + r"\[lmtp\] user \"root\" is root", err),
   "user = root: exit 1, refused", "rc %r stderr %r" % (rc, err))
rc, err = run_direct(os.path.join(ddir, "no-such.conf"))
is_(rc, 1, "a missing config file: exit 1")
like(err, PFX + r"configuration error: .*no-such\.conf", "... "
     "\"configuration error\" naming the file")
rc, err = run_direct(conf_lmtp(workers="0"))
ok(rc == 1 and re.search(PFX + r"configuration error: .*workers 0 is not "
                         r"within 1\.\.1000", err),
   "workers = 0: exit 1, configuration error", "rc %r stderr %r" % (rc, err))
# a stale socket: bound once, nobody listening on it any more
stale = os.path.join(ddir, "stale")
s = socket.socket(socket.AF_UNIX)
s.bind(stale)
s.close()
ok(stat.S_ISSOCK(os.lstat(stale).st_mode), "a stale socket file")
p = start_direct(conf_lmtp(listen="unix:" + stale))


def greeting(family, addr):
    try:
        with socket.socket(family) as c:
            c.settimeout(5)
            c.connect(addr)
            return c.recv(512).decode(errors="replace")
    except OSError:
        return None


like(rrtest.wait_until(lambda: p.poll() is None and greeting(
    socket.AF_UNIX, stale), 10) or "", r"^220 sender\.test LMTP",
    "the stale socket replaced: the daemon answers there")
is_(stop_direct(p), 0, "... and stops with exit 0")
ok(not os.path.lexists(stale), "... removing its socket")
port = rrtest.free_port()
p = start_direct(conf_lmtp(listen="inet:127.0.0.1:%d" % port))
like(rrtest.wait_until(lambda: p.poll() is None and greeting(
    socket.AF_INET, ("127.0.0.1", port)), 10) or "", r"^220 sender\.test LMTP",
    "listen = inet:127.0.0.1:PORT: the greeting over TCP")
is_(stop_direct(p), 0, "... and stops with exit 0")
done()
