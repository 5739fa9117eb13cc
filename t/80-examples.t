#!/usr/bin/env python3
# 80-examples.t - master.cf.example and main.cf.example work as written: a
# throw-away Postfix whose main.cf ends with main.cf.example and whose
# master.cf ends with master.cf.example (only paths, the agent's user and
# the milter socket substituted) passes `postfix check`, hands a
# 3-recipient message to the agent (default_transport = rapidretry:batch),
# which delivers it to a receiver; and its smtpd asks the milter
# (smtpd_milters), which defers the second recipient of a transaction.
import os
import subprocess
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver, Sender
import rrmilter

rrtest.require_root()
rrtest.agent_binary()
rrmilter.binary()

MASTER_EX = rrtest.read_file(os.path.join(TOP, "master.cf.example"))
MAIN_EX = rrtest.read_file(os.path.join(TOP, "main.cf.example"))


class Example(Sender):
    """Example - the harness's base settings (and the sanitizer's
    environment), then the example files instead of the Sender's lines."""

    def __init__(self, name, agent, milter_sock):
        super().__init__(name, relay_port=0, agent=agent)
        self.master_extra = ""
        for k in ("default_transport", "rapidretry_time_limit",
                  "rapidretry_destination_recipient_limit"):
            del self.main[k]
        subst = [("/usr/local/libexec/rapidretry/rapidretry-agent",
                  agent.binary),
                 ("/etc/rapidretry/rapidretry.conf", agent.conf),
                 ("user=rapidretry", "user=" + rrtest.TEST_USER),
                 ("unix:/run/rapidretry/milter.sock", "unix:" + milter_sock)]
        self.master_ex, self.main_ex = MASTER_EX, MAIN_EX
        for a, b in subst:
            self.master_ex = self.master_ex.replace(a, b)
            self.main_ex = self.main_ex.replace(a, b)

    def write_config(self):
        super().write_config()
        for f, text in (("main.cf", self.main_ex),
                        ("master.cf", self.master_ex)):
            with open(os.path.join(self.etc, f), "a") as fh:
                fh.write("\n" + text)


ok("rapidretry unix" in MASTER_EX and "default_transport = rapidretry:"
   in MAIN_EX and "smtpd_milters =" in MAIN_EX,
   "the examples hold the service, the transport and the milter")

recv = Receiver("recv").start()
agent = rrtest.Agent(name="agent", relay="[127.0.0.1]:%d" % recv.port)
mdir = rrtest.subdir("milter")
milter = rrmilter.Milter(mdir, "[milter]\nmode = strict\n")
ok(milter.start(), "the milter runs")
ex = Example("example", agent, milter.socket)
ex.write_config()
chk = subprocess.run(["postfix", "-c", ex.etc, "check"], capture_output=True,
                     text=True)
ok(chk.returncode == 0, "postfix check passes with the example files")
is_(chk.stdout + chk.stderr, "", "postfix check prints no warning")
ex.start()

rcpts = ["x1@d1.test", "x2@d1.test", "y1@d2.test"]
qid = ex.submit("s@src.test", rcpts)
ok(qid, "a message queued: %s" % qid)
st = rrtest.wait_until(lambda: len(ex.statuses(qid)) >= 3
                       and ex.statuses(qid), 30, what="3 statuses")
is_([s for r, d, s, t in (st or [])], ["sent"] * 3,
    "pipe(8) logged status=sent for the 3 recipients")
like("\n".join(ex.log_lines()), r"relay=rapidretry, .*status=sent",
     "through the rapidretry service")
rrtest.wait_until(lambda: len(recv.delivered()) >= 3, 10)
is_(recv.delivered(), sorted(rcpts), "the receiver got each once")

# smtpd of the example instance asks the milter (strict mode)
s = rrmilter.Smtp(ex.port)
s.cmd("EHLO client.test")
replies, final = s.message("c@src.test", ["m1@d1.test", "m2@d2.test"])
s.close()
ok(replies[0].startswith(b"250"), "the first recipient is accepted")
like(replies[1].decode(), r"^451 4\.5\.3 .*retry=0",
     "the milter defers the second one (451 4.5.3)")
ok(final is not None and final.startswith(b"250"), "the message is queued")
rrtest.wait_until(lambda: "m1@d1.test" in recv.delivered(), 20)
ok("m1@d1.test" in recv.delivered(),
   "and the agent delivered it to the receiver")
if not ok(not [l for l in ex.log_lines() if "warning" in l
               and "rapidretry" in l], "no warnings about the examples"):
    diag("\n".join(l for l in ex.log_lines() if "warning" in l))
# stopped first: LeakSanitizer reports at exit
is_(milter.stop(), 0, "the milter: SIGTERM, exit status 0")
ok(milter.sanitizer_free(), "no sanitizer reports from the milter")
done()
