#!/usr/bin/env python3
# 74-tls-hostile-cert.t - names in a server's certificate are hostile text
# a STARTTLS server whose certificate has terminal
# escapes and control bytes in its subject CN, its DNS names (one of 300
# octets, 23 in all) and its issuer's CN. At level "verify" the agent
# defers 4.7.5 with the reason, and the status line, every log line and
# every row of the delivery log hold those names only made printable,
# capped, and at most 8 of them.
import os
import re
import sqlite3
import ssl
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

ESC, BEL = "\x1b", "\x07"
d = rrtest.subdir("hostile-cert")


def openssl(*args):
    p = subprocess.run(["openssl"] + list(args), capture_output=True)
    if p.returncode != 0:
        rrtest.bail("openssl %s: %s" % (args[0], p.stderr))


def path(name):
    return os.path.join(d, name)


# a CA whose CN clears the screen, a server certificate it signs
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=evil CA" + ESC + "[2J", "-keyout", path("ca.key"),
        "-out", path("ca.pem"))
sans = (["evil" + ESC + "[31mred.test", "bell" + BEL + ".test",
         "x" * 300 + ".test"] + ["n%d.test" % i for i in range(20)])
with open(path("ext"), "w") as f:
    f.write("subjectAltName = " + ",".join("DNS:" + n for n in sans) + "\n")
openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-subj", "/CN=cn" + ESC + "]0;title" + BEL,
        "-keyout", path("s.key"), "-out", path("s.csr"))
openssl("x509", "-req", "-in", path("s.csr"), "-CA", path("ca.pem"),
        "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "2",
        "-extfile", path("ext"), "-out", path("s.pem"))
os.chmod(path("ca.pem"), 0o644)
# a CA the agent is not told about, with the same hostile CN
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=other", "-keyout", path("other.key"),
        "-out", path("other.pem"))
os.chmod(path("other.pem"), 0o644)


class TlsServer(starttlssrv.StartTlsServer):
    """TlsServer - offers STARTTLS with the hostile certificate, then
    accepts mail; counts what it accepted."""

    def __init__(self):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(path("s.pem"), path("s.key"))
        super().__init__("hostile.test")

    def starttls(self, c, f, n, say):
        say("220 2.0.0 Ready to start TLS")
        return self.ctx.wrap_socket(c, server_side=True)


srv = TlsServer()
agent = rrtest.Agent(deadline="20s")
POLICY = "\n[tls_policy]\nrelay:[127.0.0.1]:%d = verify match=mx.tls.test\n"


def clean(text):
    """clean - no control byte but LF and no byte beyond ASCII."""
    return not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\uffff]", text)


def db_texts():
    """db_texts - every text value in the delivery log database."""
    db = re.sub(r"\.db$", "-log.db", agent.journal)
    out = []
    con = sqlite3.connect(db)
    try:
        for (t,) in con.execute("SELECT name FROM sqlite_master "
                                "WHERE type = 'table'"):
            for row in con.execute("SELECT * FROM %s" % t):
                out += [v for v in row if isinstance(v, str)]
    finally:
        con.close()
    return out


# --- 1. the names do not match: the reason lists them --------------------
res, lines = agent.run_extra(["h1@d1.test"], srv.port,
                             "[tls]\nca_file = %s\n" % path("ca.pem")
                             + POLICY % srv.port, "74A001")
good = is_(res.rc, 75, "verify, names do not match: deferred (75)")
good &= like(res.out, r"^4\.7\.5 Server certificate not verified: .*name "
             r"mismatch: certificate names evil_\[31mred\.test, bell_\.test, "
             r"x{255}\.\.\., n0\.test, .* and 15 more, expected mx\.tls\.test",
             "4.7.5: the certificate's names printable, each capped, 8 shown")
good &= ok(clean(res.out) and len(res.out) < 4096,
           "the status line has no control byte (%d octets)" % len(res.out))
good &= ok(all(clean(l) for l in lines),
           "no log line of the run has a control byte")
good &= ok(any("h1@d1.test" in l and "evil_[31mred.test" in l
               for l in lines), "the recipient's log line gives the reason")
good &= is_(srv.accepted, [], "nothing was sent over the unverified session")
if not good:
    diag(repr(res))
    diag("\n".join(lines))

# --- 2. an untrusted chain: the issuer's CN, printable -------------------
res, lines = agent.run_extra(["h2@d1.test"], srv.port,
                             "[tls]\nca_file = %s\n" % path("other.pem")
                             + POLICY % srv.port, "74A002")
good = is_(res.rc, 75, "verify, untrusted issuer: deferred (75)")
good &= like(res.out, r"^4\.7\.5 .*untrusted issuer: .*\(issuer CN evil "
             r"CA_\[2J\)", "4.7.5 names the issuer's CN, printable")
good &= ok(clean(res.out), "the status line has no control byte")
good &= ok(all(clean(l) for l in lines),
           "no log line of the run has a control byte")
if not good:
    diag(repr(res))
    diag("\n".join(lines))

texts = db_texts()
ok(len(texts) > 0 and all(ESC not in t and BEL not in t for t in texts),
   "the delivery log holds no escape or bell byte (%d values)" % len(texts))
ok(any("evil_[31mred.test" in t for t in texts),
   "the delivery log has the printable names")
done()
