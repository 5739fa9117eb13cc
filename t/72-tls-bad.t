#!/usr/bin/env python3
# 72-tls-bad.t - rapidretry-agent's TLS settings and STARTTLS failures:
# garbage certificate file, missing CA file, bad level and policy lines
# (4.3.5 naming FILE:LINE); a server that answers STARTTLS with 220 and
# then stays silent (the deadline holds; at "may" the handshake timeout
# leads to one clear-text retry of that server); a server that answers
# STARTTLS with 454 ("may": clear text; "encrypt": 4.7.5); an agent whose
# TLS module (rapidretry-tls.so beside the executable) is missing, not a
# library, without its symbol or of another interface number: clear text
# still works, STARTTLS is deferred 4.7.5 with
# dlerror's reason, as when the TLS context cannot be created.
import os
import re
import subprocess
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
import starttlssrv

rrtest.require_root()
rrtest.agent_binary()


class StartTlsServer(starttlssrv.StartTlsServer):
    """StartTlsServer - a small SMTP server on 127.0.0.1 that offers
    STARTTLS and answers it per connection as MODES says: "stall" (220,
    then silence), "454" (refuse), "garbage" (220, then text that is not
    TLS); mail in clear text is accepted."""

    def __init__(self, modes):
        self.modes = list(modes)
        super().__init__()

    def starttls(self, c, f, n, say):
        mode = self.modes[n - 1] if n <= len(self.modes) else "454"
        if mode == "454":
            say("454 4.7.0 TLS not available due to local problem")
            return c
        say("220 2.0.0 Ready to start TLS")
        if mode == "stall":
            while f.read(1):      # hold the line, say nothing
                pass
            return None
        say("this is not TLS")
        return None


agent = rrtest.Agent(deadline="10s")
_qid = [0x72000]


def run(rcpts, port, text, **kw):
    _qid[0] += 1
    qid = "%X" % _qid[0]
    res, lines = agent.run_extra(rcpts, port, text, qid, **kw)
    return res, qid, lines


def conf_line(key):
    """conf_line - the line number KEY has in the agent's config file."""
    for i, l in enumerate(rrtest.read_file(agent.conf).splitlines(), 1):
        if l.startswith(key):
            return i
    return -1


# --- configuration errors --------------------------------------------------
garbage = rrtest.write_file(os.path.join(agent.dir, "garbage.pem"),
                            "this is not a certificate\n")
res, qid, lines = run(["c1@d1.test"], 25,
                      "[tls]\ncert_file = %s\n" % garbage)
is_(res.rc, 75, "garbage cert_file: deferred, not bounced")
like(res.out, r"^4\.3\.5 .*configuration error: %s:%d: \[tls\] cert_file "
     r".*garbage\.pem" % (re.escape(agent.conf), conf_line("cert_file")),
     "garbage cert_file: 4.3.5 naming FILE:LINE and the file")

res, qid, lines = run(["c2@d1.test"], 25,
                      "[tls]\nca_file = /nonexistent/ca.pem\n")
like(res.out, r"^4\.3\.5 .*%s:%d: \[tls\] ca_file /nonexistent/ca\.pem: No "
     r"such file" % (re.escape(agent.conf), conf_line("ca_file")),
     "missing ca_file: 4.3.5 naming FILE:LINE and the error")

res, qid, lines = run(["c3@d1.test"], 25,
                      "[tls]\nsecurity_level = paranoid\n")
like(res.out, r"^4\.3\.5 .*:%d: security_level \"paranoid\""
     % conf_line("security_level"), "unknown security_level: FILE:LINE")

res, qid, lines = run(["c4@d1.test"], 25,
                      "[tls_policy]\nexample.com = verify mtch=x\n")
like(res.out, r"^4\.3\.5 .*:%d: \[tls_policy\] unknown attribute "
     r"\"mtch=x\"" % conf_line("example.com"), "bad policy line: FILE:LINE")

res, qid, lines = run(["c5@d1.test"], 25,
                      "[tls]\nmin_protocol = SSLv3\n")
like(res.out, r"^4\.3\.5 .*:%d: \[tls\] min_protocol \"SSLv3\""
     % conf_line("min_protocol"), "bad min_protocol: FILE:LINE")

# --- STARTTLS answered 220, then silence: the deadline holds --------------
srv = StartTlsServer(["stall"])
res, qid, lines = run(["h1@d1.test"], srv.port,
                      "[tls]\nsecurity_level = encrypt\n")
good = is_(res.rc, 75, "stalled handshake: deferred")
good &= like(res.out, r"^4\.4\.2 delivery deadline reached",
             "stalled handshake: 4.4.2 deadline")
good &= like("\n".join(lines), r"delivery time limit reached in "
             r"conversation with .* while performing the TLS handshake",
             "stalled handshake: the log names the TLS handshake")
good &= ok(res.elapsed < 10 + 5, "stalled handshake: ended near the 10s "
           "deadline (%.1fs)" % res.elapsed)
if not good:
    diag(repr(res))
    diag("\n".join(lines))

# --- "may": a handshake that times out, then one retry in clear text ------
agent.write_conf(smtp_extra={"starttls_timeout": "2s"}, extra_text="")
srv = StartTlsServer(["stall", "plain"])
res, qid, lines = run(["h3@d1.test"], srv.port, "")
good = is_(res.rc, 0, "may, handshake timeout: delivered")
good &= is_(srv.accepted, ["h3@d1.test"], "may: delivered on the retry")
good &= is_(srv.conns, 2, "may: exactly one retry connection")
good &= ok(not [c for n, c in srv.commands if n == 2 and c == "STARTTLS"],
           "may: the retry does not try STARTTLS")
good &= ok([l for l in lines if re.search(
    r"timed out while performing the TLS handshake; trying this server "
    r"again without TLS", l)], "may: the retry is logged")
if not good:
    diag(repr(res))
    diag("\n".join(lines))

# --- "may": a handshake that fails at once (not TLS) -----------------------
srv = StartTlsServer(["garbage", "plain"])
res, qid, lines = run(["h4@d1.test"], srv.port, "")
is_(res.rc, 0, "may, handshake failure: delivered on the retry")
ok([l for l in lines if re.search(r"Cannot start TLS: handshake failure "
                                  r"with host .*; trying this server again",
                                  l)], "may, handshake failure: logged")

# --- 454 to STARTTLS ---------------------------------------------------------
srv = StartTlsServer(["454"])
res, qid, lines = run(["h5@d1.test"], srv.port, "")
is_(res.rc, 0, "454 at may: delivered in clear text")
is_(srv.accepted, ["h5@d1.test"], "454 at may: on the same connection")
ok([l for l in lines if "refused to start TLS: 454 4.7.0" in l and
    "continuing without TLS" in l], "454 at may: logged")
srv = StartTlsServer(["454"])
res, qid, lines = run(["h6@d1.test"], srv.port,
                      "[tls]\nsecurity_level = encrypt\n")
is_(res.rc, 75, "454 at encrypt: deferred")
like(res.out, r"^4\.7\.5 TLS is required, but host .* refused to start "
     r"TLS: 454 4\.7\.0", "454 at encrypt: 4.7.5 with the reply")
is_(srv.accepted, [], "454 at encrypt: nothing sent")

# --- no TLS module beside the executable -----------------------------------
# The module is loaded at the first STARTTLS the level lets the agent
# send; failing to load it is failing to create the TLS context: the
# status is the same (4.7.5 at any level, no clear-text retry, the next
# server), the reason names the module and what dlopen said, and the log
# has it once.
nomod = rrtest.Agent(name="nomod", deadline="10s", tls_module=False)
_nq = [0x72100]


def run_nomod(rcpts, port, text):
    _nq[0] += 1
    qid = "%X" % _nq[0]
    res, lines = nomod.run_extra(rcpts, port, text, qid)
    return res, qid, lines


modpath = os.path.join(nomod.dir, "rapidretry-tls.so")
ok(not os.path.exists(modpath), "nomod: the agent's directory has no module")
srv = StartTlsServer(["454"])
res, qid, lines = run_nomod(["m1@d1.test"], srv.port, "")
is_(res.rc, 0, "no module, 454 at may: delivered in clear text")
is_(srv.accepted, ["m1@d1.test"], "no module, clear text: the mail arrived")
ok(not [l for l in lines if "TLS module" in l],
   "no module, clear text: nothing loaded, nothing logged")

for level, n in (("encrypt", 2), ("may", 3)):
    srv = StartTlsServer(["garbage", "plain"])
    res, qid, lines = run_nomod(["m%d@d1.test" % n], srv.port,
                                "[tls]\nsecurity_level = %s\n" % level)
    good = is_(res.rc, 75, "no module, %s: deferred" % level)
    good &= like(res.out, r"^4\.7\.5 cannot create a TLS session: cannot "
                 r"load the TLS module: %s: cannot open shared object file"
                 % re.escape(modpath),
                 "no module, %s: 4.7.5 naming the module and dlerror" % level)
    good &= is_(srv.accepted, [], "no module, %s: nothing sent" % level)
    good &= is_(srv.conns, 1, "no module, %s: no clear-text retry" % level)
    good &= is_(len([l for l in lines if re.search(
        r"]: STARTTLS: cannot load the TLS module: %s"
        % re.escape(modpath), l)]), 1,
        "no module, %s: the log says it once" % level)
    if not good:
        diag(repr(res))
        diag("\n".join(lines))

# a file that is not a library: dlopen's own words
rrtest.write_file(modpath, "this is not a shared object\n")
srv = StartTlsServer(["garbage"])
res, qid, lines = run_nomod(["m4@d1.test"], srv.port,
                            "[tls]\nsecurity_level = encrypt\n")
is_(res.rc, 75, "module not a library: deferred")
like(res.out, r"^4\.7\.5 cannot create a TLS session: cannot load the TLS "
     r"module: %s: .*(invalid ELF header|file too short)" % re.escape(modpath),
     "module not a library: 4.7.5 with dlerror's reason")

# a library without the module's symbol, and one of another interface
# number: refused before any of its code runs
for name, body, want in (
        ("no symbol", "int rapidretry_other = 1;\n",
         r"undefined symbol: rapidretry_tls_module"),
        ("wrong interface", "const struct { unsigned abi; unsigned long "
         "size; } rapidretry_tls_module = {999, 16};\n",
         r"interface 999, this agent needs \d+")):
    src = rrtest.write_file(os.path.join(nomod.dir, "fake.c"), body)
    cc = subprocess.run(["cc", "-shared", "-fPIC", "-o", modpath, src],
                        capture_output=True, text=True)
    if not ok(cc.returncode == 0, "%s: a fake module built" % name):
        diag(cc.stderr)
        continue
    os.chmod(modpath, 0o644)
    srv = StartTlsServer(["garbage"])
    res, qid, lines = run_nomod(["m5@d1.test"], srv.port,
                                "[tls]\nsecurity_level = encrypt\n")
    is_(res.rc, 75, "%s: deferred" % name)
    like(res.out, r"^4\.7\.5 cannot create a TLS session: cannot load the "
         r"TLS module: %s: .*%s" % (re.escape(modpath), want),
         "%s: 4.7.5 saying why" % name)
done()
