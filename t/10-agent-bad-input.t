#!/usr/bin/env python3
# 10-agent-bad-input.t - rapidretry-agent run directly (as the test user,
# like pipe(8) does) with bad options, configs, addresses, messages and
# destinations. Each run: the exact exit code, the status at byte 0 of one
# stdout line, nothing on stderr, and nothing lost (defer, not bounce).
import os
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

sink = SmtpSink({})
sport = sink.start()
rrtest.at_cleanup(sink.stop)
relay = "[127.0.0.1]:%d" % sport
# DSNs (DESIGN §7) go to a stand-in that reads them: never to the host's own Postfix
agent = rrtest.Agent(relay=relay, deadline="20s",
                     extra_text="[dsn]\nsendmail = /bin/sh -c \"cat >/dev/null\"\n")
RCPT = ["u1@d1.test"]


def check(name, res, rc, status_re):
    """check - exit code, one status line at byte 0, empty stderr."""
    r = is_(res.rc, rc, "%s: exit %d" % (name, rc))
    r &= like(res.out, status_re, "%s: status at byte 0" % name)
    r &= ok(rrtest.status_line_ok(res),
            "%s: one stdout line, stderr empty" % name)
    if not r:
        diag(repr(res))
    return r


USAGE = r"^4\.3\.5 "

# --- options -----------------------------------------------------------------
c = agent.conf
cases = [
    ("no arguments", []),
    ("missing -c", ["-i", "ABC123", "-n", relay, "-f", "s@x.test", "--"]
     + RCPT),
    ("missing -i", ["-c", c, "-n", relay, "-f", "s@x.test", "--"] + RCPT),
    ("unknown option", ["-c", c, "-i", "ABC123", "-n", relay,
                        "-f", "s@x.test", "-Z", "--"] + RCPT),
    ("no recipients", ["-c", c, "-i", "ABC123", "-n", relay,
                       "-f", "s@x.test", "--"]),
]
for name, args in cases:
    check(name, agent.run(RCPT, args=args), 75, USAGE)

# --- config ------------------------------------------------------------------
missing = os.path.join(agent.dir, "no-such.conf")
check("missing config", agent.run(RCPT, conf=missing), 75, USAGE)

unreadable = rrtest.write_file(os.path.join(agent.dir, "unreadable.conf"),
                               rrtest.read_file(agent.conf), mode=0o600)
check("unreadable config", agent.run(RCPT, conf=unreadable), 75, USAGE)

text = rrtest.read_file(agent.conf).splitlines()
text.insert(3, "no_such_key = 1")           # line 4, inside [agent]
bad = rrtest.write_file(os.path.join(agent.dir, "badkey.conf"),
                        "\n".join(text) + "\n", owner=rrtest.TEST_USER)
res = agent.run(RCPT, conf=bad)
check("unknown config key", res, 75, USAGE)
like(res.out, r"%s:4\b" % bad, "unknown key: the status names FILE:LINE")

# a NUL byte: an error at its line, not the silent end of the file
text = rrtest.read_file(agent.conf).splitlines()
text[4] += "\0 ignored"
nul = rrtest.write_file(os.path.join(agent.dir, "nul.conf"),
                        "\n".join(text) + "\n", owner=rrtest.TEST_USER)
res = agent.run(RCPT, conf=nul)
check("NUL byte in config", res, 75, USAGE)
like(res.out, r"%s:5: NUL byte" % nul, "NUL byte: the status names FILE:LINE")

is_(sink.connections(), 0, "no usage or config error contacted a server")

# --- recipients and message ------------------------------------------------
res = agent.run(["user@"])
check("invalid recipient", res, 69, r"^5\.1\.3 ")
is_(sink.commands("RCPT"), [], "invalid recipient: never sent to a server")

res = agent.run(["good@d1.test", "user@"], queue_id="ABC124")
# DESIGN §7: one delivered, one bounced -> the agent's own DSN, exit 0
check("valid + invalid recipient", res, 0, r"^2\.0\.0 .*DSN sent")
is_(sink.delivered(), ["good@d1.test"],
    "valid + invalid: the valid one delivered once")

n = len(sink.messages())
res = agent.run(RCPT, message="", queue_id="ABC125")
check("empty message", res, 75, r"^4\.\d\.\d ")
is_(len(sink.messages()), n, "empty message: nothing delivered")

# --- destinations --------------------------------------------------------------
res = agent.run(RCPT, nexthop="[no-such-host.invalid]:25", queue_id="ABC126")
check("relay does not resolve", res, 75, r"^4\.4\.\d ")
ok(res.elapsed < 25, "unresolvable relay: before the deadline (%.1fs)"
   % res.elapsed)

down = "[127.0.0.1]:%d" % rrtest.free_port()
res = agent.run(RCPT, nexthop=down, queue_id="ABC127")
check("receiver down", res, 75, r"^4\.4\.\d ")

# --- journal ------------------------------------------------------------------
ro = rrtest.subdir("readonly")                # root's, 0755
agent.write_conf(agent_extra={})
jtext = rrtest.read_file(agent.conf).replace(
    "journal = %s" % agent.journal,
    "journal = %s" % os.path.join(ro, "journal.db"))
jconf = rrtest.write_file(os.path.join(agent.dir, "ro-journal.conf"), jtext,
                          owner=rrtest.TEST_USER)
n = len(sink.messages())
res = agent.run(RCPT, conf=jconf, queue_id="ABC128")
check("journal not writable", res, 75, r"^4\.\d\.\d ")
is_(len(sink.messages()), n,
    "journal not writable: nothing delivered (no duplicate on retry)")

for res_line in agent.log_lines()[-5:]:
    diag("agent log: " + res_line)
done()
