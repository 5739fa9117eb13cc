#!/usr/bin/env python3
# 71-sasl.t - rapidretry-agent's SASL client against real Postfix
# receivers with Cyrus SASL (sasldb) behind STARTTLS: the right password
# delivers (PLAIN, and LOGIN where only LOGIN is offered), a wrong one
# defers with the 535 text (or bounces 5.7.8 when configured), a password
# file others can read or owned by someone else is refused (4.7.0), AUTH
# is not sent in clear text unless allowed; the password never shows in
# the agent's log, its -v transcripts or its status lines.
import base64
import os
import pwd
import re
import sys
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done
from postfix import Receiver
import tlsca

rrtest.require_root()
rrtest.agent_binary()
if not os.path.exists("/usr/sbin/saslpasswd2"):
    rrtest.skip_all("saslpasswd2 missing (Debian: sasl2-bin)")

USER, PASS, REALM = "relayuser", "S3cret-Pw-4711", "sasl.test"
ca = tlsca.CA("sasl")
cert, key = ca.server("mx", ["mx.sasl.test"])


def receiver(name, mechs):
    main = tlsca.smtpd_tls(cert, key)
    main.update(tlsca.smtpd_sasl(name, REALM, USER, PASS, mechs))
    return Receiver(name, main=main, master_extra=tlsca.TLSMGR).start()


recv = receiver("saslrecv", "PLAIN LOGIN")
recv_login = receiver("loginrecv", "LOGIN")
agent = rrtest.Agent(deadline="30s", agent_extra={"verbose": "yes"})
pw = pwd.getpwnam(rrtest.TEST_USER)
outputs = []
_qid = [0x71000]


def pwfile(name, text, mode=0o600, owner=rrtest.TEST_USER):
    path = os.path.join(agent.dir, name)
    rrtest.write_file(path, text, mode=mode, owner=owner)
    return path


def run(rcpts, port, extra, **kw):
    _qid[0] += 1
    qid = "%X" % _qid[0]
    res, lines = agent.run_extra(rcpts, port, extra, qid, **kw)
    outputs.append(res.out)
    return res, qid, lines


def sasl_conf(path, more=""):
    return "[sasl]\npassword_file = %s\n%s" % (path, more)


good_file = pwfile("sasl_passwd",
                   "# relays\n[127.0.0.1]:%d %s:%s\n[127.0.0.1]:%d %s:%s\n"
                   % (recv.port, USER, PASS, recv_login.port, USER, PASS))
bad_file = pwfile("sasl_passwd_bad",
                  "[127.0.0.1]:%d %s:wrong-%s\n" % (recv.port, USER, PASS))

# --- 1. the right password: AUTH PLAIN inside TLS, delivered --------------
mark = recv.mark()
res, qid, lines = run(["s1@d1.test"], recv.port, sasl_conf(good_file))
good = is_(res.rc, 0, "right password: delivered")
good &= ok(recv.wait_log(r"sasl_method=PLAIN, sasl_username=%s" % USER,
                         since=mark, timeout=10),
           "the receiver logs sasl_method=PLAIN for the user")
good &= ok([l for l in lines if re.search(r">>> AUTH PLAIN \*{4,}$", l)],
           "the -v transcript shows AUTH PLAIN masked")
good &= ok([l for l in lines if "TLS connection established" in l],
           "AUTH went over TLS")
if not good:
    diag(repr(res))
    diag("\n".join(lines))
    diag("\n".join(recv.log_lines(mark)[-20:]))

# --- 2. only LOGIN offered: AUTH LOGIN, delivered --------------------------
mark = recv_login.mark()
res, qid, lines = run(["s2@d1.test"], recv_login.port, sasl_conf(good_file))
is_(res.rc, 0, "AUTH LOGIN: delivered")
ok(recv_login.wait_log(r"sasl_method=LOGIN, sasl_username=%s" % USER,
                       since=mark, timeout=10),
   "the receiver logs sasl_method=LOGIN")
ok([l for l in lines if re.search(r">>> \*{4,}$", l)],
   "the -v transcript masks the LOGIN password line")

# --- 3. a wrong password: deferred with the 535 text ------------------------
res, qid, lines = run(["s3@d1.test"], recv.port, sasl_conf(bad_file))
is_(res.rc, 75, "wrong password: deferred (75)")
like(res.out, r"^4\.7\.8 SASL authentication failed; server "
     r"127\.0\.0\.1\[127\.0\.0\.1\] said: 535 5\.7\.8 ",
     "wrong password: 4.7.8 with the server's 535 text")

# --- 4. ... bounced when auth_failure = bounce -----------------------------
res, qid, lines = run(["s4@d1.test"], recv.port,
                      sasl_conf(bad_file, "auth_failure = bounce\n"))
is_(res.rc, 69, "wrong password, auth_failure = bounce: bounced (69)")
like(res.out, r"^5\.7\.8 SASL authentication failed; .*535 5\.7\.8",
     "auth_failure = bounce: 5.7.8")

# --- 5. a password file others can read: refused ----------------------------
open_file = pwfile("sasl_passwd_0644", "[127.0.0.1]:%d %s:%s\n"
                   % (recv.port, USER, PASS), mode=0o644)
mark = recv.mark()
res, qid, lines = run(["s5@d1.test"], recv.port, sasl_conf(open_file))
is_(res.rc, 75, "mode 0644 password file: deferred")
like(res.out, r"^4\.7\.0 SASL password file .*sasl_passwd_0644: mode 0644 "
     r".*refused", "mode 0644: 4.7.0, the file and its mode named")
ok([l for l in lines if re.search(r": %s: SASL password file .*"
                                  r"refused" % qid, l)],
   "mode 0644: a clear log line")
is_(recv.connections(mark), 0, "mode 0644: the receiver was not contacted")

# --- 6. mode 0640 is fine; owned by root is not ----------------------------
g_file = pwfile("sasl_passwd_0640", "[127.0.0.1]:%d %s:%s\n"
                % (recv.port, USER, PASS), mode=0o640)
res, qid, lines = run(["s6@d1.test"], recv.port, sasl_conf(g_file))
is_(res.rc, 0, "mode 0640 password file: delivered")
root_file = pwfile("sasl_passwd_root", "[127.0.0.1]:%d %s:%s\n"
                   % (recv.port, USER, PASS), owner="root")
os.chmod(root_file, 0o644)  # readable, but not the agent's
res, qid, lines = run(["s6b@d1.test"], recv.port, sasl_conf(root_file))
like(res.out, r"^4\.7\.0 SASL password file .* owner uid 0: refused",
     "owned by root: refused 4.7.0")

# --- 7. no TLS: AUTH not sent in clear text unless allowed ------------------
res, qid, lines = run(["s7@d1.test"], recv.port,
                      "[tls]\nsecurity_level = none\n"
                      + sasl_conf(good_file))
is_(res.rc, 75, "no TLS, allow_plaintext_auth = no: deferred")
like(res.out, r"^4\.7\.0 SASL authentication to host .* refused: the "
     r"connection is not encrypted", "no TLS: 4.7.0, not encrypted")
ok(not [l for l in lines if ">>> AUTH" in l], "no TLS: no AUTH command sent")
res, qid, lines = run(["s7b@d1.test"], recv.port,
                      "[tls]\nsecurity_level = none\n"
                      + sasl_conf(good_file, "allow_plaintext_auth = yes\n"))
is_(res.rc, 0, "no TLS, allow_plaintext_auth = yes: delivered")

# --- 8. a malformed password file: configuration error with FILE:LINE ------
mal = pwfile("sasl_passwd_mal", "# x\n[127.0.0.1]:25 nocolon\n")
res, qid, lines = run(["s8@d1.test"], recv.port, sasl_conf(mal))
like(res.out, r"^4\.3\.5 .*sasl_passwd_mal:2: expected",
     "malformed password file: 4.3.5 naming FILE:LINE")

# --- the password never shows ----------------------------------------------
raw = ("\0%s\0%s" % (USER, PASS)).encode()
secrets = [PASS, base64.b64encode(raw).decode(),
           base64.b64encode(PASS.encode()).decode()]
everything = "\n".join(agent.log_lines() + outputs)
for s in secrets:
    ok(s not in everything,
       "secret %s... absent from the agent log, transcripts and statuses"
       % s[:4])
dbs = b""
for f in os.listdir(agent.journal_dir):
    with open(os.path.join(agent.journal_dir, f), "rb") as fh:
        dbs += fh.read()
for s in secrets:
    ok(s.encode() not in dbs,
       "secret %s... absent from the journal and delivery-log databases"
       % s[:4])
ok(PASS not in recv.log() and PASS not in recv_login.log(),
   "and from the receivers' logs")
done()
