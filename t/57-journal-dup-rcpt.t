#!/usr/bin/env python3
# 57-journal-dup-rcpt.t - one address twice in a batch (two original
# recipients aliased to one address: Postfix keeps both, and pipe(8) passes
# both) is one journal row, marked "in flight" once per dot (DESIGN §7).
# The agent is killed while its final dot waits at a stalled server that
# never takes the message; the rerun must deliver it (RFC 5321 §6.1: a row
# in flight once means "send again"), not skip it as delivered.
import os
import signal
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from smtpsink import SmtpSink

rrtest.require_root()
rrtest.agent_binary()

X = "x@d1.test"
rl = [X, X]
agent = rrtest.Agent(name="agent57", deadline="60s",
                     timeouts={"data_done_timeout": "60s"})
# the first dot: no reply ever, and the message is not taken
sink = SmtpSink({"rules": [{"cmd": "DOT", "txn": 1, "action": "silent"}]})
port = sink.start()
rrtest.at_cleanup(sink.stop)
qid = "57A0001"
msg = rrtest.sample_message("s@src.test", [X])

pw = rrtest.ensure_user()
p = subprocess.Popen([agent.binary, "-c", agent.conf, "-i", qid, "-n",
                      "[127.0.0.1]:%d" % port, "-f", "s@src.test", "--"] + rl,
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env=agent.env(), cwd=agent.dir,
                     user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
p.stdin.write(msg.encode())
p.stdin.close()
p.stdin = None
seen = rrtest.wait_until(
    lambda: any(e["line"] == "." for e in sink.commands()), timeout=20,
    what="the final dot")
ok(seen, "run 1: the final dot reached the stalled server")
p.send_signal(signal.SIGKILL)
p.communicate(timeout=20)
is_(p.returncode, -signal.SIGKILL, "run 1: killed while waiting")
is_(sink.delivered(), [], "run 1: the server did not take the message")

res = agent.run(rl, queue_id=qid, nexthop="[127.0.0.1]:%d" % port,
                message=msg)
ok(rrtest.status_line_ok(res), "run 2: one stdout line, stderr empty")
is_(res.rc, 0, "run 2: exit 0")
good = ok(X in sink.delivered(), "run 2: the message reached the server "
          "(not skipped as delivered)", sink.delivered())
if not good:
    diag(repr(res))
    diag("\n".join(l for l in agent.log_lines() if qid in l)[-3000:])
done()
