#!/usr/bin/env python3
"""torture_lmtp - the fault campaign for LMTP mode (DESIGN §9): a
resident rapidretry-agent --lmtp driven as Postfix's lmtp client drives
it, 2-4 messages per LMTP session (XFORWARD IDENT, pipelined RCPTs), with
the server faults of t/lib/torture.py (drop, stall, garbage, 452/250
mixes) and LMTP-side faults: the client vanishing before, during or right
after DATA, and SIGKILL or SIGTERM of the agent in the middle of a
message. After the first session every message whose recipients did not
all get a final answer (2xx or 5xx) is handed over again in a new session
with the same queue id, as Postfix retries it, to the server now
well-behaved, at most 5 times.

Invariants:
  answered    in a session that ran to its end, every accepted RCPT of
              every message got exactly one reply after the DATA
  consistent  a 2xx reply: the server has the recipient (in this or an
              earlier attempt); a 5xx: it never took it
  lost        every recipient ends taken or refused with 5xx
  duplicate   nothing taken twice, except in the window no client can
              close (a SIGKILL or the client gone between the final dot and
              the journal, a dot reply lost): counted as "window"

Usage: torture_lmtp.py [--seed S] [-n N] [-j J]    (make torture-lmtp)
"""

import argparse
import collections
import multiprocessing
import os
import random
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rrtest                                   # noqa: E402
import torture                                  # noqa: E402
from lmtpclient import LmtpAgent, stuff         # noqa: E402
from smtpsink import SmtpSink                   # noqa: E402

FAMILIES = ("server", "vanish", "kill", "mix")
RERUNS = 5


class Scenario:
    def __init__(self, seed):
        rng = random.Random(seed)
        self.seed = seed
        self.family = FAMILIES[seed % len(FAMILIES)]
        self.msgs = []
        for m in range(rng.randint(2, 4)):
            doms = ["d%d.test" % i for i in range(1, rng.randint(1, 3) + 1)]
            self.msgs.append({
                "qid": "L%07X%d" % (seed % 0xFFFFFFF, m),
                "rcpts": ["s%dm%dr%d@%s" % (seed, m, i, rng.choice(doms))
                          for i in range(rng.randint(1, 10))]})
        self.script = {"rules": []}
        self.fault = None   # (kind, message index, detail)
        n = max(len(x["rcpts"]) for x in self.msgs)
        f = self.family
        if f in ("server", "mix"):
            r = torture.step_rule(rng, n)
            k = rng.random()
            if k < 0.4:
                r["action"] = "drop"
                if r["cmd"] == "DOT" and rng.random() < 0.5:
                    r["taken"] = True
            elif k < 0.6:
                r["action"] = "silent"
            elif k < 0.8:
                r["raw"] = torture.garbage(rng)
            else:
                r["reply"] = rng.choice(torture.REPLIES)[1]
            r["times"] = rng.randint(1, 2)
            self.script["rules"].append(r)
            if rng.random() < 0.3:
                self.script["rcpt_max"] = rng.randint(1, 4)
        if f == "vanish" or (f == "mix" and rng.random() < 0.5):
            self.fault = ("vanish", rng.randrange(len(self.msgs)),
                          rng.choice(("before_data", "in_data",
                                      "after_data")))
        if f == "kill":
            self.fault = ("kill", rng.randrange(len(self.msgs)),
                          (rng.choice((signal.SIGKILL, signal.SIGTERM)),
                           rng.uniform(0.0, 0.3)))
            self.script["rules"].append({"cmd": "DOT",
                                         "delay": rng.uniform(0.05, 0.3)})

    def message(self, m):
        """message - message M, the same bytes in every attempt (as
        Postfix's queue file is)"""
        x = self.msgs[m]
        if "text" not in x:
            x["text"] = rrtest.sample_message(
                "s@src.test", x["rcpts"], subject="lmtp torture %d"
                % self.seed)
        return x["text"]


class Worker:
    def __init__(self, wid):
        self.agent = rrtest.Agent(
            name="ltorture-w%d" % wid, deadline="10s",
            timeouts=torture.TIMEOUTS, smtp_extra={"starttls_timeout": "1s"},
            extra_text="\n[lmtp]\ndeadline = 10s\nidle_timeout = 5s\n"
                       "[schedule]\nfailure_cohort = 0\n")

    def _session(self, sc, todo, fault):
        """_session - one LMTP session handing over TODO [(m, rcpts)];
        returns ({(m, rcpt): reply}, ended normally, window-hazard set)."""
        s = LmtpAgent(self.agent, timeout=25)
        replies, hazard = {}, set()
        if not s.reply() or not s.cmd("LHLO postfix.test").startswith("250"):
            s.kill()
            return replies, False, hazard
        for m, rcpts in todo:
            msg = sc.message(m)
            if fault is not None and fault[1] == m:
                kind, _, detail = fault
                if kind == "vanish":
                    cmds = ["XFORWARD IDENT=%s" % sc.msgs[m]["qid"],
                            "MAIL FROM:<s@src.test>"] + \
                           ["RCPT TO:<%s>" % r for r in rcpts]
                    if detail != "before_data":
                        cmds.append("DATA")
                    s.send("".join(c + "\r\n" for c in cmds))
                    if detail == "in_data":
                        time.sleep(0.05)
                        s.send(stuff(msg)[:len(msg) // 2])
                    elif detail == "after_data":
                        time.sleep(0.05)
                        s.send(stuff(msg) + ".\r\n")
                        time.sleep(random.uniform(0, 0.3))
                    # the client goes away; the agent ends by itself (its
                    # delivery, if any, finishes and is journaled) before
                    # Postfix would try again
                    s.sock.close()
                    if s.wait(40) is None:
                        replies[("error", m)] = "agent still running 40s " \
                                                "after its client left"
                    s.kill()
                    return replies, False, hazard
                sig, delay = detail
                cmds = ["XFORWARD IDENT=%s" % sc.msgs[m]["qid"],
                        "MAIL FROM:<s@src.test>"] + \
                       ["RCPT TO:<%s>" % r for r in rcpts] + ["DATA"]
                s.send("".join(c + "\r\n" for c in cmds))
                time.sleep(0.05)
                s.send(stuff(msg) + ".\r\n")
                time.sleep(delay)
                s.proc.send_signal(sig)
                hazard.add(m)
                if sig == signal.SIGTERM:   # it answers, then ends
                    s.reply(5)              # XFORWARD
                    s.reply(5)              # MAIL
                    rr = ["\n".join(s.reply(5)) for _ in rcpts]
                    data = "\n".join(s.reply(5))
                    acc = [r for r, x in zip(rcpts, rr) if x.startswith("2")]
                    for r, x in zip(rcpts, rr):
                        if not x.startswith("2"):
                            replies[(m, r)] = x
                    final = s.replies(len(acc), timeout=15) \
                        if data.startswith("354") else []
                    for r, line in zip(acc, final):  # in RCPT order
                        replies[(m, r)] = line
                    s.wait(15)
                s.kill()
                return replies, False, hazard
            mail, rr, data, final = s.transaction(
                "s@src.test", rcpts, msg, ident=sc.msgs[m]["qid"])
            acc = [r for r, x in zip(rcpts, rr) if x.startswith("2")]
            for r, x in zip(rcpts, rr):
                if not x.startswith("2"):
                    replies[(m, r)] = x
            if data.startswith("354") and len(final) != len(acc):
                replies[("error", m)] = "%d replies for %d accepted" % (
                    len(final), len(acc))
            for r, line in zip(acc, final):
                replies[(m, r)] = line
        s.cmd("QUIT")
        s.wait(10)
        s.kill()
        return replies, True, hazard

    def scenario(self, seed):
        sc = Scenario(seed)
        sink = SmtpSink(sc.script)
        port = sink.start()
        self.agent.write_conf(relay="[127.0.0.1]:%d" % port)
        res = {"seed": seed, "family": sc.family, "fail": [], "window": 0,
               "runs": 0, "n": sum(len(x["rcpts"]) for x in sc.msgs)}
        final = {}                      # (m, rcpt) -> "2" or "5"
        hazards = set()
        try:
            todo = [(m, list(x["rcpts"])) for m, x in enumerate(sc.msgs)]
            for attempt in range(RERUNS + 1):
                before = len(sink.messages())
                replies, ended, hz = self._session(
                    sc, todo, sc.fault if attempt == 0 else None)
                hazards |= hz
                res["runs"] += 1
                rrtest.wait_until(lambda: sink.active() == 0, timeout=10)
                taken_now = set()
                for msg in sink.messages():
                    for r in msg["rcpts"]:
                        taken_now.add(r.lower())
                for key, line in replies.items():
                    if key[0] == "error":
                        res["fail"].append(("answered", sc.family, line))
                        continue
                    m, r = key
                    if "<" in line and "<%s>" % r.lower() not in line.lower():
                        res["fail"].append(("answered", sc.family, "%s got "
                                            "another's reply: %s"
                                            % (r, line[:120])))
                    if line.startswith("2"):
                        final[key] = "2"
                        if r.lower() not in taken_now:
                            res["fail"].append((
                                "consistent", sc.family, "%s: %s but the "
                                "server does not have it" % (r, line)))
                    elif line.startswith("5"):
                        final[key] = "5"
                if ended and any(k not in replies for m, rc in todo
                                 for k in [(m, r) for r in rc]):
                    res["fail"].append(("answered", sc.family,
                                        "a recipient without a reply"))
                if attempt == 0:
                    sink.set_script({})
                todo = [(m, [r for r in rc if (m, r) not in final])
                        for m, rc in todo]
                todo = [(m, rc) for m, rc in todo if rc]
                if not todo:
                    break
            counts = collections.Counter(r.lower() for msg in sink.messages()
                                         for r in msg["rcpts"])
            clean = all(msg.get("clean", True) for msg in sink.messages())
            for m, x in enumerate(sc.msgs):
                for r in x["rcpts"]:
                    k = (m, r)
                    c = counts[r.lower()]
                    if final.get(k) == "5" and c > 0:
                        res["fail"].append(("consistent", sc.family,
                                            "%s refused 5xx but taken" % r))
                    if c == 0 and final.get(k) != "5":
                        res["fail"].append(("lost", sc.family, "%s neither "
                                            "taken nor refused" % r))
                    if c > 1:
                        if m in hazards or not clean:
                            res["window"] += 1
                        else:
                            res["fail"].append(("duplicate", sc.family,
                                                "%s taken %d times" % (r, c)))
        finally:
            sink.stop()
        return res


_worker = None


def _init():
    global _worker
    _worker = Worker(os.getpid() % 100000)


def _one(seed):
    try:
        return _worker.scenario(seed)
    except Exception:
        import traceback
        return {"seed": seed, "family": Scenario(seed).family, "n": 0,
                "runs": 0, "window": 0,
                "fail": [("harness", "exception",
                          traceback.format_exc()[-600:])]}


def campaign(seed, n, jobs=1, progress=None):
    rrtest.ensure_user()
    rrtest.tmpdir()
    stats = {f: collections.Counter() for f in FAMILIES}
    failures = []
    t0 = time.monotonic()
    seeds = range(seed, seed + n)
    if jobs > 1:
        pool = multiprocessing.Pool(jobs, _init)
        it = pool.imap_unordered(_one, seeds)
    else:
        _init()
        it = map(_one, seeds)
    for k, r in enumerate(it, 1):
        c = stats[r["family"]]
        c["scenarios"] += 1
        c["recipients"] += r["n"]
        c["sessions"] += r["runs"]
        c["window"] += r["window"]
        if r["fail"]:
            c["failed"] += 1
            failures.append(r)
            if progress:
                progress("FAIL seed %d (%s): %s" % (
                    r["seed"], r["family"], "; ".join(
                        "%s: %s" % (a, d) for a, b, d in r["fail"][:3])))
        if progress and k % 100 == 0:
            progress("%d/%d scenarios, %d failed, %.0fs"
                     % (k, n, len(failures), time.monotonic() - t0))
    if jobs > 1:
        pool.close()
        pool.join()
    return {"stats": stats, "failures": failures,
            "elapsed": time.monotonic() - t0}


def table(summary):
    cols = ("scenarios", "recipients", "sessions", "window", "failed")
    lines = ["%-8s " % "family" + " ".join("%10s" % c for c in cols)]
    tot = collections.Counter()
    for f in FAMILIES:
        c = summary["stats"][f]
        tot.update(c)
        lines.append("%-8s " % f + " ".join("%10d" % c[x] for x in cols))
    lines.append("%-8s " % "total" + " ".join("%10d" % tot[x] for x in cols))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("-j", type=int, default=1)
    a = ap.parse_args()
    s = campaign(a.seed, a.n, a.j, progress=lambda m: print(m, flush=True))
    print(table(s))
    print("elapsed %.0fs" % s["elapsed"])
    rrtest._done = True
    sys.exit(1 if s["failures"] else 0)


if __name__ == "__main__":
    main()
