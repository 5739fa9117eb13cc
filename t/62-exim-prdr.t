#!/usr/bin/env python3
# 62-exim-prdr.t - rapidretry-agent against a real Exim 4.96 receiver with
# PRDR (prdr_enable = true) and an acl_smtp_data_prdr that refuses one
# recipient after the message: 10 recipients go in one transaction, 9 are
# delivered (counted in Exim's mailboxes), the refused one is bounced with
# Exim's own status and gets exactly one DSN from the agent; once with
# the agent run directly (its sendmail caught), once through a sender
# Postfix (pipe(8)), the DSN read from the sender's mailbox.
#
# Exim comes from Debian's package archive: exim4-daemon-light and
# exim4-base fetched with apt-get download and unpacked (dpkg-deb -x) into
# a cache under the build tree (the packages conflict with postfix, so they
# are not installed); its libraries come from t/lib/install-deps. Skipped
# when the archive cannot be reached.
import glob
import os
import re
import shutil
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from dsnmail import DsnSender, dsn_parts

rrtest.require_root()
rrtest.agent_binary()

EXIM_USER = "Debian-exim"
CACHE = os.path.join(rrtest.build_dir(), "cache", "exim4")
EXIM = os.path.join(CACHE, "root", "usr", "sbin", "exim4")


def fetch_exim():
    """fetch_exim - the unpacked Exim binary in the cache, or a reason"""
    if os.access(EXIM, os.X_OK):
        return None
    dl = os.path.join(CACHE, "download")
    shutil.rmtree(dl, ignore_errors=True)
    os.makedirs(dl)
    p = subprocess.run(["apt-get", "download", "exim4-daemon-light",
                        "exim4-base"], cwd=dl, capture_output=True,
                       text=True, timeout=300)
    debs = glob.glob(os.path.join(dl, "*.deb"))
    if p.returncode != 0 or len(debs) != 2:
        return "apt-get download exim4: %s" % (p.stderr.strip()[-300:])
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(CACHE, "root")],
                       check=True)
    return None if os.access(EXIM, os.X_OK) else "no exim4 in the packages"


def exim_user():
    """exim_user - the system user Exim runs as (adduser refuses the
    capital letter: groupadd/useradd)"""
    if subprocess.run(["getent", "passwd", EXIM_USER],
                      capture_output=True).returncode == 0:
        return
    subprocess.run(["groupadd", "--system", "-f", EXIM_USER],
                   capture_output=True)
    subprocess.run(["useradd", "--system", "-g", EXIM_USER, "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", EXIM_USER], capture_output=True)


why = fetch_exim()
if why is not None:
    rrtest.skip_all(why)
missing = [l.split()[0] for l in subprocess.run(
    ["ldd", EXIM], capture_output=True, text=True).stdout.splitlines()
    if "not found" in l]
if missing:
    rrtest.skip_all("Exim's libraries missing (make deps): %s"
                    % " ".join(missing))
exim_user()

EXIM_CONF = """\
exim_path = {exim}
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
primary_hostname = exim.test
exim_user = {user}
exim_group = {user}
trusted_users = root
keep_environment =
host_lookup =
rfc1413_hosts =
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
tls_advertise_hosts =
prdr_enable = true
domainlist local_domains = d1.test
acl_smtp_rcpt = acl_rcpt
acl_smtp_data_prdr = acl_prdr

begin acl
acl_rcpt:
  accept domains = +local_domains
  deny message = 5.1.2 not here

acl_prdr:
  deny local_parts = r5 : p5
       message = 5.7.1 content refused for $local_part@$domain
  accept

begin routers
local:
  driver = accept
  domains = +local_domains
  local_parts = {parts}
  transport = mbox

begin transports
mbox:
  driver = appendfile
  file = {dir}/mail/$local_part_data
  user = {user}
  group = {user}
  mode = 0600
"""

edir = rrtest.subdir("exim62")
for sub in ("spool", "log", "mail"):
    rrtest.subdir("exim62/" + sub, owner=EXIM_USER)
port = rrtest.free_port()
conf = rrtest.write_file(os.path.join(edir, "exim.conf"),
                         EXIM_CONF.format(exim=EXIM, dir=edir, port=port,
                                          user=EXIM_USER,
                                          parts=" : ".join(
                                              "%s%d" % (c, i) for c in "rp"
                                              for i in range(1, 11))))
daemon = subprocess.Popen([EXIM, "-C", conf, "-bdf", "-oX", str(port)],
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)


def stop_daemon():
    if daemon.poll() is None:
        daemon.terminate()
        daemon.wait(10)


rrtest.at_cleanup(stop_daemon)


def mainlog():
    return rrtest.read_file(os.path.join(edir, "log", "mainlog"))


if not rrtest.wait_until(lambda: rrtest.port_listening(port), timeout=20):
    stop_daemon()
    diag(daemon.stderr.read().decode(errors="replace"))
    diag(mainlog() + rrtest.read_file(os.path.join(edir, "log", "paniclog")))
    ok(False, "Exim listens on 127.0.0.1:%d" % port)
    done()

# the agent, its DSNs caught by a sendmail stand-in
notices = rrtest.subdir("exim62-notices", owner=rrtest.TEST_USER)
capture = rrtest.write_file(os.path.join(rrtest.tmpdir(), "capture62.sh"),
                            "#!/bin/sh\ncat > %s/notice.$$\n" % notices,
                            mode=0o755)
agent = rrtest.Agent(name="agent62", deadline="60s", dsn_sendmail=capture)
RL = ["r%d@d1.test" % i for i in range(1, 11)]
QID = "62E1A0B1C2"
msg = rrtest.sample_message("s@src.test", RL, subject="PRDR test")
res = agent.run(RL, queue_id=QID, nexthop="[127.0.0.1]:%d" % port,
                message=msg, timeout=90)
ok(rrtest.status_line_ok(res), "one stdout line, stderr empty")
diag("the agent to Exim, 10 recipients with PRDR: %.2f s" % res.elapsed)
is_(res.rc, 0, "exit 0 (the refused one's DSN went to the sender)")
like(res.out, r"^2\.0\.0 delivered 9 .*1 failed: DSN sent",
     "status line: 9 delivered, 1 failed with a DSN")


def agent_lines(sender):
    return sender.agent.log_lines()


def mailboxes():
    """mailboxes - {local part: messages in its mbox}"""
    out = {}
    for f in glob.glob(os.path.join(edir, "mail", "*")):
        out[os.path.basename(f)] = len(re.findall(
            r"^From ", rrtest.read_file(f), re.M))
    return out


want = {"r%d" % i: 1 for i in range(1, 11) if i != 5}
got = rrtest.wait_until(lambda: mailboxes() == want and mailboxes(),
                        timeout=30) or mailboxes()
is_(got, want, "Exim's mailboxes: 9 recipients, one message each, none "
    "for r5")
lines = agent.log_lines()
st = {r: (d, s, t) for q, r, d, s, t in rrtest.agent_status(lines)
      if q == QID}
is_(sorted(r for r, v in st.items() if v[1] == "sent"),
    sorted(r for r in RL if r != "r5@d1.test"), "9 logged status=sent")
is_(st.get("r5@d1.test", (None, None, None))[:2], ("5.7.1", "bounced"),
    "r5 bounced with Exim's own 5.7.1")
like(st.get("r5@d1.test", (None, None, ""))[2],
     r"said: 550 5\.7\.1 content refused for r5@d1\.test \(in reply to "
     r"end of DATA command\)", "r5's log line carries Exim's reply")
ok([l for l in lines if QID in l and "batch done: 9 sent, 1 bounced, "
    "0 deferred" in l and "1 transactions" in l],
   "the agent: one transaction")
is_(len(re.findall(r"<= sender@src\.test", mainlog())), 1,
    "Exim received one message")
like(mainlog(), r"<= sender@src\.test .* PRDR ",
   "Exim took it as a PRDR transaction")
dsns = sorted(glob.glob(os.path.join(notices, "notice.*")))
is_(len(dsns), 1, "one DSN")
dsn = rrtest.read_file(dsns[0]) if dsns else ""
like(dsn, r"Final-Recipient: rfc822; ?r5@d1\.test", "the DSN names r5")
ok("Final-Recipient: rfc822; r1@" not in dsn and
   len(re.findall(r"Final-Recipient:", dsn)) == 1,
   "the DSN names no other recipient")
like(dsn, r"Status: 5\.7\.1", "the DSN has r5's own status")

# the batch again (as after a crash before pipe(8) saw the status): the
# journal knows all ten, Exim sees nothing new
res = agent.run(RL, queue_id=QID, nexthop="[127.0.0.1]:%d" % port,
                message=msg, timeout=90)
is_(res.rc, 0, "rerun: exit 0")
is_(mailboxes(), want, "rerun: no second copy")
is_(len(glob.glob(os.path.join(notices, "notice.*"))), 1,
    "rerun: no second DSN")

# --- 2. the same through a sender Postfix (pipe(8) -> agent -> Exim) -------
snd = DsnSender("snd62", port)
snd.start()
PL = ["p%d@d1.test" % i for i in range(1, 11)]
qid = snd.submit("alice@src.test", PL)
ok(qid, "Postfix queued %s" % qid)
st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= 10
                       and snd.statuses(qid), 60, what="10 statuses") or []
is_(sorted(s for r, d, s, t in st), ["sent"] * 10,
    "Postfix: pipe(8) saw exit 0 for the batch")
want.update({"p%d" % i: 1 for i in range(1, 11) if i != 5})
got = rrtest.wait_until(lambda: mailboxes() == want and mailboxes(),
                        timeout=30) or mailboxes()
is_(got, want, "Postfix: 9 more mailboxes with one message, none for p5")
ok([l for l in agent_lines(snd) if qid in l and "batch done: 9 sent, "
    "1 bounced, 0 deferred" in l and "1 transactions" in l],
   "Postfix: the agent made one transaction")
is_(len(re.findall(r"<= alice@src\.test", mainlog())), 1,
    "Postfix: Exim received one message")
box = rrtest.wait_until(lambda: snd.mailbox(), 30, what="the DSN") or []
rrtest.wait_until(snd.queue_empty, 20, what="empty queue")
is_(len(box), 1, "Postfix: exactly one DSN in the sender's mailbox")
p = dsn_parts(box[0]) if box else None
if ok(p is not None, "Postfix: the DSN is a multipart/report"):
    is_([(b.get("final-recipient"), b.get("status")) for b in p[0]],
        [("rfc822; p5@d1.test", "5.7.1")],
        "Postfix: the DSN names p5 alone, with Exim's 5.7.1")
    like(p[0][0].get("diagnostic-code", ""),
         r"^smtp; 550 5\.7\.1 content refused for p5@d1\.test",
         "Postfix: Diagnostic-Code is Exim's PRDR reply")
done()
