#!/usr/bin/env python3
# 90-deb.t - the Debian package: `make deb` builds it (lintian: no error),
# `apt-get install ./rapidretry_*.deb` installs it (system user, state
# directory, conffile), a throw-away Postfix wired to the INSTALLED agent
# with the lines of the installed master.cf.example delivers a message
# through it (over STARTTLS: the installed agent finds its TLS module
# beside it), an upgrade keeps the administrator's edits and data, a
# plain removal keeps them too, and purge leaves no file of ours (the
# system user stays). It changes this machine, so that part runs alone
# (a lock), only when no rapidretry package or data is there already, and
# purges what it installed even when it fails.
import fcntl
import glob
import os
import pwd
import re
import shutil
import subprocess
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver, Sender
import tlsca

PKG = "rapidretry"
USER = "rapidretry"
AGENT = "/usr/libexec/rapidretry/rapidretry-agent"
CONF = "/etc/rapidretry/rapidretry.conf"
STATE = "/var/lib/rapidretry"
DOC = "/usr/share/doc/rapidretry"

rrtest.require_root()
if rrtest.ASAN:
    rrtest.skip_all("the package holds the default build, not ASan's")
for tool in ("dpkg-buildpackage", "dh", "apt-get"):
    if shutil.which(tool) is None:
        rrtest.skip_all("%s missing (make deps installs debhelper)" % tool)

state = {"ours": False, "user_before": True}


def installed():
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PKG],
                       capture_output=True, text=True)
    return "ok installed" in p.stdout or "config-files" in p.stdout


def admin_data():
    """admin_data - why this machine has rapidretry already (the package,
    its configuration or its data), or "" """
    if installed():
        return "the rapidretry package is installed"
    for d in ("/etc/rapidretry", STATE):
        if os.path.exists(d):
            return "%s exists: not touching an administrator's data" % d
    return ""


APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120",
       "-o", "Dpkg::Options::=--force-confdef",
       "-o", "Dpkg::Options::=--force-confold"]


def apt(*args):
    p = subprocess.run(APT + list(args), env=APT_ENV, capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        diag("apt-get %s: rc=%d\n%s\n%s" % (" ".join(args), p.returncode,
                                            p.stdout[-3000:],
                                            p.stderr[-3000:]))
    return p


@rrtest.at_cleanup
def purge():
    """purge - whatever happened, the machine is left as it was (the
    system user too, when this test made it); only what this run did"""
    if not state["ours"]:
        return
    if installed():
        subprocess.run(["dpkg", "--purge", PKG], capture_output=True,
                       env=APT_ENV)
    if not state["user_before"]:
        subprocess.run(["deluser", "--system", "--quiet", USER],
                       capture_output=True)
        subprocess.run(["delgroup", "--system", "--quiet", USER],
                       capture_output=True)


# --- build and lintian --------------------------------------------------------
out = rrtest.subdir("deb")
p = subprocess.run(["make", "-C", TOP, "deb", "DEB_OUT=" + out],
                   capture_output=True, text=True, timeout=600)
debs = glob.glob(os.path.join(out, "rapidretry_*.deb"))
if not ok(p.returncode == 0 and len(debs) == 1, "make deb built one package"):
    diag(p.stdout[-3000:] + p.stderr[-3000:])
    rrtest.bail("no package")
deb = debs[0]
if shutil.which("lintian"):
    p = subprocess.run(["lintian", "--pedantic", deb], capture_output=True,
                       text=True, timeout=300)
    errors = [l for l in p.stdout.splitlines() if l.startswith("E:")]
    is_(errors, [], "lintian: no error")
    for l in p.stdout.splitlines():
        diag("lintian: " + l)
else:
    rrtest.skip("lintian not installed")

# --- install ------------------------------------------------------------------
# one run at a time on this machine (it installs and purges a package);
# the build and lintian above need no lock
lock = open("/run/lock/rapidretry-deb-test.lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
if admin_data():
    diag("the install part is skipped: %s" % admin_data())
    done()
try:
    pwd.getpwnam(USER)
except KeyError:
    state["user_before"] = False
state["ours"] = True  # from here on, the cleanup purges

p = apt("install", deb)
ok(p.returncode == 0 and installed(), "apt-get install ./%s"
   % os.path.basename(deb))
files = subprocess.run(["dpkg", "-L", PKG], capture_output=True,
                       text=True).stdout.split()
for f in (AGENT, "/usr/sbin/rapidretry-milter", "/usr/sbin/rapidretry-log",
          "/lib/systemd/system/rapidretry-milter.service",
          "/lib/systemd/system/rapidretry-lmtp.service", CONF,
          "/usr/libexec/rapidretry/rapidretry-tls.so",
          "/usr/share/man/man8/rapidretry-agent.8.gz",
          "/usr/share/man/man5/rapidretry.conf.5.gz",
          DOC + "/master.cf.example"):
    ok(f in files and os.path.exists(f), "installed: %s" % f)
conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", PKG],
                           capture_output=True, text=True).stdout
like(conffiles, r"^\s*%s [0-9a-f]{32}" % re.escape(CONF),
     "the configuration is a conffile")
try:
    pw = pwd.getpwnam(USER)
except KeyError:
    pw = None
ok(pw is not None and pw.pw_shell == "/usr/sbin/nologin" and pw.pw_uid < 1000,
   "postinst made the system user %s (no login)" % USER)
st = os.stat(STATE) if os.path.isdir(STATE) else None
ok(st is not None and pw is not None and st.st_uid == pw.pw_uid
   and st.st_mode & 0o777 == 0o750, "%s: owned by %s, mode 0750"
   % (STATE, USER))
unit = rrtest.read_file("/lib/systemd/system/rapidretry-milter.service")
ok(AGENT not in unit and "/usr/local" not in unit
   and "/usr/sbin/rapidretry-milter" in unit,
   "the systemd unit names the installed milter")
unit = rrtest.read_file("/lib/systemd/system/rapidretry-lmtp.service")
ok("/usr/local" not in unit and re.search(
    r"^ExecStart=%s --lmtp-daemon\s*\\\n\s*-c %s$" % (re.escape(AGENT),
    re.escape(CONF)), unit, re.M) is not None,
   "the LMTP daemon's unit runs the installed agent with the configuration")
enabled = subprocess.run(["systemctl", "is-enabled", "rapidretry-lmtp"],
                         capture_output=True, text=True).stdout.strip()
ok(enabled in ("disabled", ""), "the LMTP daemon's unit is not enabled "
   "(%s): no change to a live Postfix without the admin asking"
   % (enabled or "no systemd"))

# --- mail through the installed agent, as master.cf.example says --------------
example = rrtest.read_file(DOC + "/master.cf.example")
master = "\n".join(l for l in example.splitlines()
                   if l.strip() and not l.startswith("#")) + "\n"
like(master, r"argv=%s -c %s" % (re.escape(AGENT), re.escape(CONF)),
     "master.cf.example names the installed agent and configuration")
ca = tlsca.CA("deb")
cert, key = ca.server("mx", ["mx.tls.test"])
recv = Receiver("recv", main=tlsca.smtpd_tls(cert, key),
                master_extra=tlsca.TLSMGR).start()
snd = Sender("snd", smtp=True, relay_port=recv.port, main={
    "relayhost": "",
    "default_transport": "rapidretry:[127.0.0.1]:%d" % recv.port,
    "rapidretry_destination_recipient_limit": "50",
    "rapidretry_time_limit": "1000s"})
snd.master_extra = master
snd.start()
p = subprocess.run([AGENT, "-t", "-p", snd.etc], capture_output=True,
                   text=True, timeout=60)
ok(p.returncode == 0 and "# master.cf: service rapidretry, user=%s, "
   "rapidretry_time_limit = 1000s" % USER in p.stdout,
   "rapidretry-agent -t: the installed configuration passes, checked as "
   "master.cf's user")
if p.returncode:
    diag(p.stderr)
RCPTS = ["a%d@d1.test" % i for i in range(1, 4)] + ["b1@d2.test"]
qid = snd.submit("s@src.test", RCPTS)
ok(qid, "queued: %s" % qid)
stat = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= len(RCPTS)
                         and snd.statuses(qid), 60, what="pipe(8) statuses")
is_(sorted(s for r, d, s, t in stat or []), ["sent"] * len(RCPTS),
    "pipe(8) logged status=sent for every recipient")
like(" ".join(t for r, d, s, t in stat or []),
     r"delivered via rapidretry service \(2\.0\.0 delivered 4 recipients",
     "through the pipe transport: one agent run for all four")
is_(recv.wait_delivered(len(RCPTS)), sorted(RCPTS),
    "each recipient delivered exactly once")
ok(rrtest.wait_until(lambda: any("using TLSv1." in t
                                 for _, t in recv.messages()), 10),
   "the installed agent used STARTTLS (level may): the module was found")
journal = os.path.join(STATE, "rapidretry.db")
ok(os.path.exists(journal) and os.stat(journal).st_uid == pw.pw_uid,
   "the agent, run as %s, wrote its journal in %s" % (USER, STATE))
snd.stop()
recv.stop()

# --- upgrade: the same package with a higher version --------------------------
with open(CONF, "a") as f:
    f.write("# edited by the administrator\n")
open(os.path.join(STATE, "admin-note"), "w").close()
tree = rrtest.subdir("deb/tree")
subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
ctl = os.path.join(tree, "DEBIAN", "control")
text = rrtest.read_file(ctl)
text = re.sub(r"^Version: (\S+)$", r"Version: \1+upgrade1", text, flags=re.M)
rrtest.write_file(ctl, text)
newer = os.path.join(out, "newer.deb")
subprocess.run(["dpkg-deb", "--root-owner-group", "-b", tree, newer],
               check=True, capture_output=True)
p = apt("install", newer)
v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PKG],
                   capture_output=True, text=True).stdout
ok(p.returncode == 0 and v.endswith("+upgrade1"), "upgraded to %s" % v)
ok("edited by the administrator" in rrtest.read_file(CONF),
   "upgrade: the edited configuration is kept")
ok(os.path.exists(journal) and os.path.exists(os.path.join(STATE,
                                                           "admin-note")),
   "upgrade: the journal and the administrator's files are kept")

# --- remove, then purge -------------------------------------------------------
p = apt("remove", PKG)
ok(p.returncode == 0 and not os.path.exists(AGENT), "apt-get remove")
ok(os.path.exists(CONF) and os.path.exists(journal),
   "remove: the configuration and the journal stay")
p = apt("purge", PKG)
ok(p.returncode == 0 and not installed(), "apt-get purge")
left = [f for f in files if os.path.exists(f) and not os.path.isdir(f)]
left += [d for d in ("/etc/rapidretry", STATE, "/usr/libexec/rapidretry",
                     DOC) if os.path.exists(d)]
is_(left, [], "purge: no file of ours is left")
try:
    pwd.getpwnam(USER)
    kept = True
except KeyError:
    kept = False
ok(kept, "purge: the system user stays")
done()
