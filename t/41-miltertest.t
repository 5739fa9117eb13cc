#!/usr/bin/env python3
"""41-miltertest.t - rapidretry-milter's milter protocol answers, driven by
miltertest (Debian package "miltertest"; skipped when absent): first
recipient continues, another class is answered with a reply code (our
451 4.5.3 TEMPFAIL), the same class continues, state resets after abort
and end of message, exempt client network, {auth_authen}, NOTIFY=NEVER,
garbage macros. Reply texts are checked through Postfix (42-*.t):
miltertest does not show them."""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, done
import rrmilter

MILTER = rrmilter.binary()
if not shutil.which("miltertest"):
    rrtest.skip_all("miltertest not installed (Debian package miltertest)")

# Each case: a name and Lua lines run on a fresh connection "c" after
# connect/conninfo from 192.0.2.1; check(c, want, what) fails the script.
LUA_HEAD = """\
function check(c, want, what)
  local got = mt.getreply(c)
  if got ~= want then
    error(what .. ": got reply " .. string.format("%q", got))
  end
end
local c = mt.connect("unix:{socket}", 40, 0.25)
if c == nil then error("cannot connect") end
mt.macro(c, SMFIC_CONNECT, "{{daemon_name}}", "smtpd")
if mt.conninfo(c, "client.test", "{ip}") ~= nil then error("conninfo") end
check(c, SMFIR_CONTINUE, "connect")
"""

CASES = [
    ("first continues, other class tempfails, same class continues",
     "192.0.2.1", """
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.rcptto(c, "<b@y.test>") check(c, SMFIR_REPLYCODE, "rcpt 2")
mt.rcptto(c, "<c@x.test>") check(c, SMFIR_CONTINUE, "rcpt 3")
"""),
    ("state reset after abort", "192.0.2.1", """
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.abort(c)
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail 2")
mt.rcptto(c, "<b@y.test>") check(c, SMFIR_CONTINUE, "rcpt after abort")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_REPLYCODE, "old class now other")
"""),
    ("state reset after end of message (DATA not negotiated)", "192.0.2.1",
     """
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.eom(c) check(c, SMFIR_CONTINUE, "eom")
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail 2")
mt.rcptto(c, "<b@y.test>") check(c, SMFIR_CONTINUE, "rcpt after eom")
"""),
    ("exempt client network", "127.0.0.1", """
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.rcptto(c, "<b@y.test>") check(c, SMFIR_CONTINUE, "rcpt 2")
"""),
    ("exempt IPv6 client network", "::1", """
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.rcptto(c, "<b@y.test>") check(c, SMFIR_CONTINUE, "rcpt 2")
"""),
    ("exempt authenticated client", "192.0.2.1", """
mt.macro(c, SMFIC_MAIL, "{auth_authen}", "alice", "i", "")
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.rcptto(c, "<b@y.test>") check(c, SMFIR_CONTINUE, "rcpt 2")
"""),
    ("NOTIFY=NEVER exempt", "192.0.2.1", """
mt.mailfrom(c, "s@client.test") check(c, SMFIR_CONTINUE, "mail")
mt.rcptto(c, "<a@x.test>") check(c, SMFIR_CONTINUE, "rcpt 1")
mt.rcptto(c, "<b@y.test>", "NOTIFY=NEVER") check(c, SMFIR_CONTINUE, "never")
mt.rcptto(c, "<b@y.test>", "NOTIFY=DELAY") check(c, SMFIR_REPLYCODE, "delay")
"""),
    ("garbage macros and addresses", "192.0.2.1", """
mt.macro(c, SMFIC_MAIL, "{auth_authen}", "", "i", "\\001\\255garbage")
mt.mailfrom(c, "") check(c, SMFIR_CONTINUE, "mail")
mt.macro(c, SMFIC_RCPT, "i", "\\255\\254", "{rcpt_addr}", "")
mt.rcptto(c, "") check(c, SMFIR_CONTINUE, "empty rcpt")
mt.rcptto(c, "<<<@@@>>>") check(c, SMFIR_REPLYCODE, "odd rcpt, other class")
mt.rcptto(c, "\\255\\254@x.test") check(c, SMFIR_REPLYCODE, "8-bit rcpt")
"""),
]

d = rrtest.subdir("miltertest")
conf = os.path.join(d, "m.conf")
with open(conf, "w") as f:
    f.write("[milter]\nmode = domain\n"
            "exempt_networks = 127.0.0.0/8, ::1/128\n")
sock = os.path.join(d, "m.sock")
log = open(os.path.join(d, "m.log"), "w")
proc = subprocess.Popen([MILTER, "-f", "-p", "unix:" + sock, "-c", conf],
                        stdout=log, stderr=subprocess.STDOUT)
try:
    ok(rrtest.wait_until(lambda: os.path.exists(sock), 10), "milter listens")
    for i, (name, ip, body) in enumerate(CASES):
        script = os.path.join(d, "case%d.lua" % i)
        with open(script, "w") as f:
            f.write(LUA_HEAD.format(socket=sock, ip=ip) + body +
                    "mt.disconnect(c)\n")
        r = subprocess.run(["miltertest", "-s", script],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        ok(r.returncode == 0, name, r.stdout)
    ok(proc.poll() is None, "milter still running")
finally:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    text = open(os.path.join(d, "m.log"), errors="replace").read()
    ok("statistics (exit)" in text, "clean exit with counters", text)
    ok(not rrtest.sanitizer_report(text),
       "no sanitizer reports", text)
done()
