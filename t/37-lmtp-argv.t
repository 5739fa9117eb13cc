#!/usr/bin/env python3
# 37-lmtp-argv.t - the agent's options in any order (DESIGN §9): "-c CONF
# --lmtp" is LMTP mode as "--lmtp -c CONF" is, "-c CONF -q DOMAIN" the
# route probe; a recipient "-t" after "--" stays a pipe-mode recipient;
# through real Postfix spawn(8): the wrong-order argv delivers, and an
# argv the agent cannot use is answered with an LMTP greeting "421 4.3.5"
# whose reason Postfix logs on the deferred recipient (before, every
# spawn ended with pipe mode's usage line on the socket and Postfix
# logged only a lost connection).
import os
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver
from lmtpsender import LmtpSender

rrtest.require_root()
rrtest.agent_binary()

DISCARD = {"transport_maps": "inline:{src.test=discard:}"}


def run(agent, args, stdin=b""):
    """run - the agent with ARGS as the test user; (rc, stdout)."""
    pw = rrtest.ensure_user()
    p = subprocess.run([agent.binary] + args, input=stdin,
                       capture_output=True, env=agent.env(), cwd=agent.dir,
                       user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                       timeout=30)
    return p.returncode, p.stdout.decode(errors="replace")


# --- 1. the modes found wherever their option stands -----------------------
a = rrtest.Agent(name="direct", relay="[127.0.0.1]:9")
for args in (["-c", a.conf, "--lmtp"], ["-v", "-c", a.conf, "--lmtp"],
             ["--lmtp", "-c", a.conf]):
    rc, out = run(a, args, b"LHLO client.test\r\nQUIT\r\n")
    like(out, r"^220 \S+ LMTP", "%s: the LMTP greeting" % " ".join(
        x if x != a.conf else "CONF" for x in args))
    like(out, r"\n221 ", "... and QUIT answered 221")
rc, out = run(a, ["-c", a.conf, "-q", "a.test"])
is_(rc, 0, "-c CONF -q a.test: the route probe (exit 0)")
like(out, r"a\.test: route relay = \[127\.0\.0\.1\]:9", "... and its answer")
rc, out = run(a, ["-c", a.conf, "-i", "ABC", "-f", "s@src.test", "--",
                  "-t"])
like(out, r"^4\.3\.0 rapidretry-agent: empty message", "a recipient \"-t\" "
     "after \"--\" is pipe mode's (here: no message on stdin, 4.3.0)")
is_(rc, 75, "... exit 75")
rc, out = run(a, ["--lmtp", "-c", a.conf, "-x"], b"QUIT\r\n")
like(out, r"^421 4\.3\.5 rapidretry: bad arguments \"--lmtp -c \S+ -x\"; "
     r"usage: rapidretry-agent --lmtp", "a bad option in LMTP mode: 421 "
     "4.3.5 greeting naming the arguments")
is_(out.count("\n"), 1, "... and nothing else on the socket")

# --- 2. through real Postfix spawn(8) -----------------------------------
recv = Receiver("recv").start()
snd = LmtpSender("snd", relay_port=recv.port, main=DISCARD)
conf = snd.agent.conf
example = "--lmtp -c %s" % conf
ok(example in snd.master_extra, "master.cf.example's argv as the base")
snd.master_extra = snd.master_extra.replace(example, "-c %s --lmtp" % conf)
snd.start()
qid = snd.submit("s@src.test", ["w1@d1.test", "w2@d1.test"])
st = rrtest.wait_until(lambda: len(snd.statuses(qid)) >= 2
                       and snd.statuses(qid), 60, what="2 statuses")
good = is_(sorted(s for r, d, s, t in st or []), ["sent", "sent"],
           "argv \"-c CONF --lmtp\" through spawn(8): both sent")
good &= is_(recv.wait_delivered(2), ["w1@d1.test", "w2@d1.test"],
            "... and in the receiver's Maildir")
if not good:
    diag("\n".join(snd.log_lines()[-30:]))
snd.stop()

bad = LmtpSender("bad", relay_port=recv.port, main=DISCARD)
bad.master_extra = bad.master_extra.replace(
    "--lmtp -c %s" % bad.agent.conf, "--lmtp -c %s -x" % bad.agent.conf)
bad.start()
qid = bad.submit("s@src.test", ["x1@d1.test"])
st = rrtest.wait_until(lambda: bad.statuses(qid), 60, what="a status")
r, d, s, text = st[0] if st else (None,) * 4
is_((d, s), ("4.3.5", "deferred"), "a bad option: Postfix defers 4.3.5")
like(text or "", r"421 4\.3\.5 rapidretry: bad arguments .*-x.*usage: "
     r"rapidretry-agent --lmtp", "... and its log says why, in the agent's "
     "words")
ok(bad.queued_rcpts().get("x1@d1.test") is not None,
   "the message stays in Postfix's queue")
bad.stop()
done()
