#!/usr/bin/env python3
# 82-pflogsumm.t - pflogsumm(1) reads the agent's log: one real agent run
# against a receiving Postfix that accepts 5 recipients, defers 2 (450)
# and rejects 1 (550); `pflogsumm --syslog-name=rapidretry` on the agent's
# log counts 5 delivered, 2 deferrals (of 1 message) and 1 bounced, and
# lists the deferral and bounce reasons.
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
from postfix import Receiver

rrtest.require_root()
rrtest.agent_binary()
if not shutil.which("pflogsumm"):
    rrtest.skip_all("pflogsumm not installed (make deps)")

access = rrtest.write_file(
    os.path.join(rrtest.tmpdir(), "access"),
    "busy1@d1.test 450 4.2.1 Mailbox busy, try later\n"
    "busy2@d2.test 450 4.2.1 Mailbox busy, try later\n"
    "gone@d1.test 550 5.1.1 No such user\n")
recv = Receiver("recv", main={
    "smtpd_recipient_restrictions":
        "check_recipient_access texthash:%s, permit" % access}).start()
# no DSN submission from this agent (its mail is not what is tested)
conf_c = rrtest.read_file(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "agent", "conf.c"))
agent = rrtest.Agent(relay="[127.0.0.1]:%d" % recv.port,
                     extra_text="\n[dsn]\nsendmail = /bin/sh -c \"cat >/dev/null\"\n"
                     if '"dsn", "sendmail"' in conf_c else "")
good = ["a1@d1.test", "a2@d1.test", "a3@d1.test", "b1@d2.test",
        "b2@d2.test"]
rcpts = good + ["busy1@d1.test", "busy2@d2.test", "gone@d1.test"]
res = agent.run(rcpts, queue_id="7C0FFEE001")
like(res.out, r"^4\.2\.1 ", "the agent defers the batch (4.2.1): %s"
     % res.out.strip())
is_(res.rc, 75, "exit 75")
st = rrtest.agent_status(agent.log_lines())
is_(sorted(s for q, r, d, s, t in st),
    ["bounced"] + ["deferred"] * 2 + ["sent"] * 5,
    "the agent logged 5 sent, 2 deferred, 1 bounced")

p = subprocess.run(["pflogsumm", "--syslog-name=rapidretry",
                    "--problems-first", agent.log_file],
                   capture_output=True, text=True)
out = p.stdout
is_(p.returncode, 0, "pflogsumm runs")


def total(label):
    """total - the Grand Totals number in front of LABEL."""
    m = re.search(r"^\s*(\d+)\s+%s\b" % label, out, re.M)
    return int(m.group(1)) if m else None


is_(total("delivered"), 5, "pflogsumm: 5 delivered")
is_(total("deferred"), 1, "pflogsumm: 1 message deferred")
like(out, r"deferred\s+\(2\s+deferrals\)", "pflogsumm: 2 deferrals")
is_(total("bounced"), 1, "pflogsumm: 1 bounced")
like(out, r"(?s)message deferral detail.*Mailbox busy",
     "the deferral reason is listed")
like(out, r"(?s)message bounce detail.*No such user",
     "the bounce reason is listed")
m = re.search(r"(?s)Recipients by message count.*?\n\n", out)
if not ok(m and all(r in m.group(0) for r in good),
          "the delivered recipients are listed"):
    diag(out[:3000])
done()
