#!/usr/bin/env python3
"""smtpsink - a scripted SMTP server for rapidretry's tests.

Listens on 127.0.0.1, port 0. Replies follow a script (a dict, or a JSON
file with --script): the first matching rule decides a command's reply,
otherwise a plain well-behaved server answers. Commands are read in order
from a buffer and answered in order, so pipelined input works. Everything
that crosses the wire and every accepted message is recorded.

Script keys:
  hostname    "sink.test"
  lean        true: record nothing but how often each recipient was taken
              (taken, ntaken): for soaks of many messages
  greeting    "220 sink.test ESMTP smtpsink" (or a rule dict for CONNECT)
  ehlo        extension lines, default PIPELINING SIZE 8BITMIME
              ENHANCEDSTATUSCODES; e.g. "LIMITS RCPTMAX=2 RCPTDOMAINMAX=1"
  tls         {"cert": PEM, "key": PEM}: STARTTLS offered (in the EHLO
              lines, before the others) and carried out with Python's ssl;
              tls_sessions counts the handshakes
  rcpt_max    accept at most K recipients per transaction, then
              "452 4.5.3 Error: too many recipients"
  mail_lenient  true: a refused MAIL still opens the transaction (RCPTs
              accepted, DATA 354, the message kept), against RFC 2920
  one_domain  refuse recipients outside the first accepted one's domain
              with "451 4.3.0 Multiple destination domains per transaction
              is unsupported"
  rules       list of rules; a rule matches on
                cmd   CONNECT EHLO HELO MAIL RCPT DATA BODY DOT RSET NOOP
                      QUIT, any other verb (STARTTLS AUTH ...), or *;
                      BODY matches once after the 354 of DATA
                conn  connection number (1-based; int or list)
                txn   transaction number over all connections (each MAIL
                      starts one); ctxn: within the connection
                rcpt  RCPT number within the transaction: 3, "4+", [2, 5]
                addr  recipient (or MAIL sender) address, any case;
                addr_re a regular expression on it
                times apply only the first N times it matches
              and acts with
                reply  "452 4.5.3 ..." or a list of lines (multi-line)
                raw    a line sent verbatim (garbage), or a list of items,
                       each a line or {"repeat": LINE, "count": N}; chars
                       U+0000..U+00FF go out as single bytes (NUL, 8-bit)
                       and no CR LF is added after an item ending in
                       "\\" (the backslash is removed): a missing line end
                action "drop" (close without a reply), "silent" (no reply
                       to this or any later command on the connection:
                       a stall), "take" (MAIL: start the transaction even
                       though the reply refuses it, as broken servers do
                       against RFC 2920)
                after  BODY only: act after this many body lines
                       "skip" (PRDR353: no 353, the DOT reply alone)
                taken  DOT with "drop" or "silent": the message counts as
                       taken all the same (the reply is lost, not the mail)
                close  true: close the connection after the reply
                delay  seconds to wait before replying

PRDR (draft-hall-prdr-00): with "PRDR" among the ehlo lines and PRDR on
MAIL, the dot is answered with the PRDR353 rule's reply (default "353
PRDR content analysis beginning"), then one PRDR reply per accepted
recipient (rule cmd PRDR, rcpt = its place among the accepted ones, addr;
default "250 2.1.5 Ok"), then the DOT reply as the final one; the
message's rcpts are those whose PRDR reply was 2xx.

Ground truth: a message counts as taken when the DOT reply's code starts
with "2"; "clean" says whether that reply was a well-formed single line
sent in full (a drop, stall or garbage at DOT makes a taken message
unclean: the client cannot know). With record=FILE every
event and every taken message is appended as a JSON line.

Concurrency, counted at the socket: max_active() is the most client
connections open at once; max_busy() the most sessions at once that were
not idle, a session being idle from the reply that ends a transaction
(DOT, RSET) to its next MAIL and from QUIT on: an idle kept connection
is not a session in use.

Records: transcript() -> [{"conn", "dir": "c"|"s", "line", "t"}],
messages() -> [{"conn", "txn", "mail_from", "rcpts", "body"}] (body with
LF line ends, dot-stuffing undone).
"""

import argparse
import collections
import json
import re
import signal
import socket
import ssl
import sys
import threading
import time

DEFAULT_EHLO = ["PIPELINING", "SIZE 10240000", "8BITMIME",
                "ENHANCEDSTATUSCODES"]
TOO_MANY = "452 4.5.3 Error: too many recipients"
ONE_DOMAIN = ("451 4.3.0 Multiple destination domains per transaction is "
              "unsupported")


def _addr(arg):
    """_addr - the address inside <...> of a MAIL/RCPT argument."""
    m = re.search(r"<([^>]*)>", arg)
    return m.group(1) if m else arg.split(":", 1)[-1].strip()


def _num_match(spec, n):
    if spec is None:
        return True
    if isinstance(spec, bool):
        return False
    if isinstance(spec, int):
        return n == spec
    if isinstance(spec, str):
        if spec.endswith("+"):
            return n >= int(spec[:-1])
        return n == int(spec)
    if isinstance(spec, (list, tuple)):
        if len(spec) == 2 and all(isinstance(x, int) for x in spec):
            return spec[0] <= n <= spec[1]
    return False


def _in(spec, n):
    if spec is None:
        return True
    if isinstance(spec, (list, tuple)):
        return n in spec
    return _num_match(spec, n)


class SmtpSink:
    """SmtpSink - the server; start() returns the port."""

    def __init__(self, script=None, record=None):
        self.script = dict(script or {})
        self.host = self.script.get("hostname", "sink.test")
        self.rules = [dict(r) for r in self.script.get("rules", [])]
        for r in self.rules:
            r.setdefault("_hits", 0)
        self.lock = threading.Lock()
        self._transcript = []
        self._messages = []
        self.violations = []
        self.pipelined = 0      # commands that arrived behind another one
        self.nconn = 0
        self.ntxn = 0
        self.nactive = 0        # sessions still running
        self.most_active = 0    # the most connections open at once
        self.nbusy = 0          # sessions not idle (see the header)
        self.most_busy = 0
        self.record = open(record, "a") if record else None
        self.lean = bool(self.script.get("lean"))
        self.tls_sessions = 0
        self.tls_ctx = None
        if self.script.get("tls"):
            t = self.script["tls"]
            self.tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_ctx.load_cert_chain(t["cert"], t["key"])
        self.taken = collections.Counter()  # lean: recipient -> times taken
        self.ntaken = 0
        self.sock = None
        self.port = None
        self.stopping = False
        self.conns = []
        self.threads = []

    # --- recording ---------------------------------------------------------

    def _rec(self, conn, direction, line, data=False):
        if self.lean:
            return
        ev = {"conn": conn, "dir": direction, "line": line,
              "t": round(time.time(), 3)}
        if data:
            ev["data"] = True
        with self.lock:
            self._transcript.append(ev)
            if self.record:
                self.record.write(json.dumps(ev) + "\n")
                self.record.flush()

    def _rec_msg(self, msg):
        if self.lean:           # counts only: a soak's millions of lines
            with self.lock:
                self.taken.update(r.lower() for r in msg["rcpts"])
                self.ntaken += 1
            return
        with self.lock:
            self._messages.append(msg)
            if self.record:
                self.record.write(json.dumps(dict(msg, type="message")) +
                                  "\n")
                self.record.flush()

    def transcript(self):
        with self.lock:
            return list(self._transcript)

    def messages(self):
        with self.lock:
            return [dict(m) for m in self._messages]

    def delivered(self):
        """delivered - every recipient of every accepted message, sorted."""
        return sorted(r.lower() for m in self.messages() for r in m["rcpts"])

    def commands(self, verb=None):
        """commands - client lines outside DATA, optionally one verb."""
        res = [e for e in self.transcript() if e["dir"] == "c"
               and not e.get("data")]
        if verb:
            res = [e for e in res if e["line"].upper().startswith(verb)]
        return res

    def rcpt_count(self, addr):
        """rcpt_count - how often RCPT TO:<addr> crossed the wire."""
        a = addr.lower()
        return len([e for e in self.commands("RCPT")
                    if _addr(e["line"]).lower() == a])

    def transactions(self):
        """transactions - [(conn, [rcpt addresses sent])] per MAIL."""
        res = []
        for e in self.commands():
            v = e["line"][:4].upper()
            if v == "MAIL":
                res.append((e["conn"], []))
            elif v == "RCPT" and res and res[-1][0] == e["conn"]:
                res[-1][1].append(_addr(e["line"]).lower())
        return res

    def replies(self, conn=None):
        return [e for e in self.transcript() if e["dir"] == "s"
                and (conn is None or e["conn"] == conn)]

    def connections(self):
        with self.lock:
            return self.nconn

    def active(self):
        """active - client sessions still open (a killed client's last
        commands may still be in processing)."""
        with self.lock:
            return self.nactive

    def max_active(self):
        """max_active - the most connections open at once."""
        with self.lock:
            return self.most_active

    def max_busy(self):
        """max_busy - the most sessions in use (not idle) at once."""
        with self.lock:
            return self.most_busy

    def set_script(self, script):
        """set_script - replace the script (rules restart their counts);
        sessions already open keep their state."""
        with self.lock:
            self.script = dict(script or {})
            self.rules = [dict(r, _hits=0)
                          for r in self.script.get("rules", [])]

    def dump(self):
        """dump - the transcript as text (for diagnostics)."""
        return "\n".join("%d %s %s" % (e["conn"], "C:" if e["dir"] == "c"
                                       else "S:", e["line"])
                         for e in self.transcript())

    # --- server ------------------------------------------------------------

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.script.get("port", 0)))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self.port

    def stop(self):
        self.stopping = True
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(2)
        if self.sock:
            self.sock.close()
            self.sock = None

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.lean:   # replies at once, not behind delayed ACKs
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.nconn += 1
                self.nactive += 1
                self.most_active = max(self.most_active, self.nactive)
                n = self.nconn
            self.conns.append(c)
            t = threading.Thread(target=Session(self, c, n).run, daemon=True)
            t.start()
            self.threads.append(t)

    def match(self, cmd, conn, txn, ctxn, rcpt, addr):
        """match - the first rule for this command, or None."""
        with self.lock:
            for r in self.rules:
                rc = r.get("cmd", "*").upper()
                if rc != "*" and rc != cmd:
                    continue
                if not _in(r.get("conn"), conn):
                    continue
                if "txn" in r and not _in(r["txn"], txn):
                    continue
                if "ctxn" in r and not _in(r["ctxn"], ctxn):
                    continue
                if "rcpt" in r and (cmd not in ("RCPT", "PRDR") or
                                    not _num_match(r["rcpt"], rcpt)):
                    continue
                if "addr" in r and (addr or "").lower() != r["addr"].lower():
                    continue
                if "addr_re" in r and not re.search(r["addr_re"], addr or "",
                                                    re.I):
                    continue
                if "times" in r and r["_hits"] >= r["times"]:
                    continue
                r["_hits"] += 1
                return r
        return None


class Session:
    """Session - one client connection."""

    def __init__(self, sink, sock, n):
        self.sink, self.sock, self.n = sink, sock, n
        self.buf = b""
        self.closed = False
        self.silent = False
        self.ctxn = 0
        self.txn = 0
        self.in_txn = False
        self.mail_from = None
        self.rcpts = []
        self.nrcpt = 0
        self.prdr = False
        self.announced = set()
        self.tls = False
        self.busy = False
        self._set_busy(True)

    def _set_busy(self, on):
        """_set_busy - the session is in use (ON) or idle, for max_busy"""
        s = self.sink
        with s.lock:
            if on and not self.busy:
                s.nbusy += 1
                s.most_busy = max(s.most_busy, s.nbusy)
            elif not on and self.busy:
                s.nbusy -= 1
            self.busy = on

    def run(self):
        try:
            self._run()
        except OSError:
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self._set_busy(False)
            with self.sink.lock:
                self.sink.nactive -= 1

    def _run(self):
        s = self.sink
        rule = s.match("CONNECT", self.n, 0, 0, 0, None)
        if not self._act(rule, s.script.get(
                "greeting", "220 %s ESMTP smtpsink" % s.host)):
            return
        while not self.closed:
            line = self._readline()
            if line is None:
                return
            if self.silent:
                s._rec(self.n, "c", line)
                continue
            self._command(line)

    def _readline(self):
        while b"\n" not in self.buf:
            try:
                d = self.sock.recv(65536)
            except OSError:
                return None
            if not d:
                return None
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", errors="replace")

    def _send(self, lines):
        for l in lines:
            self.sink._rec(self.n, "s", l)
        self.sock.sendall("".join(l + "\r\n" for l in lines).encode())

    def _send_raw(self, raw):
        """_send_raw - garbage: items as bytes (see the script keys)."""
        if isinstance(raw, str):
            raw = [raw]
        for item in raw:
            if isinstance(item, dict):
                line = item["repeat"]
                n = int(item.get("count", 1))
                self.sink._rec(self.n, "s", "%s (x%d)" % (line[:200], n))
                data = (line + "\r\n").encode("latin-1", "replace")
                chunk = data * max(1, 65536 // len(data))
                per = 65536 // len(data) or 1
                while n > 0:
                    k = min(n, per)
                    self.sock.sendall(chunk if k == per else data * k)
                    n -= k
                continue
            end = "\r\n"
            if item.endswith("\\"):
                item, end = item[:-1], ""
            self.sink._rec(self.n, "s", item[:1000])
            self.sock.sendall((item + end).encode("latin-1", "replace"))

    def _act(self, rule, default):
        """_act - reply per rule or default; False when the session ends."""
        if rule is not None:
            if rule.get("delay"):
                time.sleep(rule["delay"])
            act = rule.get("action")
            if act == "drop":
                self.closed = True
                return False
            if act == "silent":
                self.silent = True
                return True
            if "raw" in rule:
                self._send_raw(rule["raw"])
            elif "reply" in rule:
                self._send(_lines(rule["reply"]))
            else:
                self._send(_lines(default))
            if rule.get("close"):
                self.closed = True
                return False
            return True
        self._send(_lines(default))
        return True

    def _reply_code(self, rule, default):
        if rule is None or ("reply" not in rule and "raw" not in rule):
            text = default
        elif "reply" in rule:
            text = _lines(rule["reply"])[-1]
        else:
            text = rule["raw"]
            while isinstance(text, list):
                text = text[-1] if text else ""
            if isinstance(text, dict):
                text = text["repeat"]
        return text[:1]

    def _command(self, line):
        s = self.sink
        s._rec(self.n, "c", line)
        verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
        arg = line[len(verb):]
        if self.buf:
            with s.lock:
                s.pipelined += 1
        if "PIPELINING" not in self.announced and self.buf and \
                verb not in ("QUIT",):
            s.violations.append((self.n, "pipelined without PIPELINING",
                                 line))
        handler = getattr(self, "_cmd_" + verb, None)
        if handler is None:
            rule = s.match(verb, self.n, self.txn, self.ctxn, 0, None)
            self._act(rule, "502 5.5.2 Error: command not recognized")
            return
        handler(arg)

    def _cmd_EHLO(self, arg):
        s = self.sink
        ext = s.script.get("ehlo", DEFAULT_EHLO)
        if s.tls_ctx is not None and not self.tls:
            ext = ["STARTTLS"] + list(ext)
        self.announced = {e.split(" ")[0].upper() for e in ext}
        rule = s.match("EHLO", self.n, self.txn, self.ctxn, 0, None)
        if ext:
            default = (["250-" + s.host] + ["250-" + e for e in ext[:-1]]
                       + ["250 " + ext[-1]])
        else:
            default = ["250 " + s.host]
        self._act(rule, default)
        self._reset()

    def _cmd_HELO(self, arg):
        s = self.sink
        self.announced = set()
        rule = s.match("HELO", self.n, self.txn, self.ctxn, 0, None)
        self._act(rule, "250 " + s.host)
        self._reset()

    def _reset(self):
        self.in_txn = False
        self.mail_from = None
        self.rcpts = []
        self.nrcpt = 0
        self.prdr = False

    def _cmd_MAIL(self, arg):
        s = self.sink
        with s.lock:
            s.ntxn += 1
            self.txn = s.ntxn
        self.ctxn += 1
        self.nrcpt = 0
        self._set_busy(True)
        addr = _addr(arg)
        rule = s.match("MAIL", self.n, self.txn, self.ctxn, 0, addr)
        if self.in_txn:
            default = "503 5.5.1 Error: nested MAIL command"
        else:
            default = "250 2.1.0 Ok"
        code = self._reply_code(rule, default)
        if not self._act(rule, default):
            return
        take = rule is not None and rule.get("action") == "take"
        if (code == "2" or take or s.script.get("mail_lenient")) and \
                not self.in_txn:
            self.prdr = "PRDR" in self.announced and \
                "PRDR" in arg.upper().split()
            self.in_txn = True
            self.mail_from = addr
            self.rcpts = []

    def _cmd_RCPT(self, arg):
        s = self.sink
        self.nrcpt += 1
        addr = _addr(arg)
        rule = s.match("RCPT", self.n, self.txn, self.ctxn, self.nrcpt, addr)
        if not self.in_txn:
            default = "503 5.5.1 Error: need MAIL command"
        elif s.script.get("rcpt_max") and \
                len(self.rcpts) >= s.script["rcpt_max"]:
            default = TOO_MANY
        elif s.script.get("one_domain") and self.rcpts and \
                addr.rpartition("@")[2].lower() != \
                self.rcpts[0].rpartition("@")[2].lower():
            default = ONE_DOMAIN
        else:
            default = "250 2.1.5 Ok"
        code = self._reply_code(rule, default)
        if not self._act(rule, default):
            return
        if code == "2" and self.in_txn:
            self.rcpts.append(addr)

    def _cmd_DATA(self, arg):
        s = self.sink
        if self.buf:
            s.violations.append((self.n, "data sent before 354", "DATA"))
        rule = s.match("DATA", self.n, self.txn, self.ctxn, 0, None)
        if not self.in_txn:
            default = "503 5.5.1 Error: need RCPT command"
        elif not self.rcpts:
            default = "554 5.5.1 Error: no valid recipients"
        else:
            default = "354 End data with <CR><LF>.<CR><LF>"
        code = self._reply_code(rule, default)
        if not self._act(rule, default):
            return
        if code != "3":
            return
        body = []
        brule = s.match("BODY", self.n, self.txn, self.ctxn, 0, None)
        while True:
            if brule is not None and len(body) >= brule.get("after", 0):
                self._reset()
                self._act(brule, "554 5.3.0 Error: transaction failed")
                return
            line = self._readline()
            if line is None:
                self.closed = True
                return
            if line == ".":
                break
            s._rec(self.n, "c", line, data=True)
            body.append(line[1:] if line.startswith(".") else line)
        s._rec(self.n, "c", ".")
        took = self._prdr() if self.prdr else self.rcpts
        if took is None:
            self.closed = True
            return
        rule = s.match("DOT", self.n, self.txn, self.ctxn, 0, None)
        default = "250 2.0.0 Ok: queued as %d.%d" % (self.n, self.txn)
        code = self._reply_code(rule, default)
        msg = {"conn": self.n, "txn": self.txn, "mail_from": self.mail_from,
               "rcpts": list(took),
               "body": "".join(l + "\n" for l in body),
               "clean": rule is None or (
                   "raw" not in rule and not rule.get("action") and
                   len(_lines(rule.get("reply", default))) == 1)}
        if rule is not None and rule.get("action") in ("drop", "silent"):
            code = "2" if rule.get("taken") else "x"
        if code == "2" and took:
            s._rec_msg(msg)     # queued before the reply goes out
        self._reset()
        self._act(rule, default)
        self._set_busy(False)   # this thread reads the next MAIL itself

    def _prdr(self):
        """_prdr - after the dot of a PRDR transaction: the 353 and one
        reply per accepted recipient; the ones taken, None when the
        connection ended."""
        s = self.sink
        rule = s.match("PRDR353", self.n, self.txn, self.ctxn, 0, None)
        if rule is not None and rule.get("action") == "skip":
            return self.rcpts
        if not self._act(rule, "353 PRDR content analysis beginning"):
            return None
        took = []
        for k, addr in enumerate(self.rcpts, 1):
            rule = s.match("PRDR", self.n, self.txn, self.ctxn, k, addr)
            code = self._reply_code(rule, "250 2.1.5 Ok")
            if not self._act(rule, "250 2.1.5 Ok"):
                return None
            if code == "2":
                took.append(addr)
        return took

    def _cmd_AUTH(self, arg):
        """_cmd_AUTH - any credentials do (AUTH PLAIN with its initial
        response, RFC 4954 §4)."""
        rule = self.sink.match("AUTH", self.n, self.txn, self.ctxn, 0, None)
        self._act(rule, "235 2.7.0 Authentication successful")

    def _cmd_RSET(self, arg):
        rule = self.sink.match("RSET", self.n, self.txn, self.ctxn, 0, None)
        self._reset()
        self._act(rule, "250 2.0.0 Ok")
        self._set_busy(False)

    def _cmd_STARTTLS(self, arg):
        s = self.sink
        rule = s.match("STARTTLS", self.n, self.txn, self.ctxn, 0, None)
        if s.tls_ctx is None or self.tls or rule is not None:
            self._act(rule, "502 5.5.2 Error: command not recognized")
            return
        self._send(["220 2.0.0 Ready to start TLS"])
        # RFC 3207 §4.2: whatever came with STARTTLS is not kept
        self.buf = b""
        self.sock = s.tls_ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True
        self.announced = set()
        with s.lock:
            s.tls_sessions += 1

    def _cmd_NOOP(self, arg):
        rule = self.sink.match("NOOP", self.n, self.txn, self.ctxn, 0, None)
        self._act(rule, "250 2.0.0 Ok")

    def _cmd_QUIT(self, arg):
        rule = self.sink.match("QUIT", self.n, self.txn, self.ctxn, 0, None)
        self._set_busy(False)
        if self._act(rule, "221 2.0.0 Bye"):
            self.closed = True


def _lines(reply):
    """_lines - a reply (string or list of lines) as wire lines."""
    if isinstance(reply, str):
        reply = reply.split("\n")
    if len(reply) == 1:
        return list(reply)
    code = reply[-1][:3]
    return [code + "-" + l[4:] if l[:3] == code else code + "-" + l
            for l in reply[:-1]] + [reply[-1]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--script", help="JSON script file")
    ap.add_argument("--record", help="append JSON lines here")
    a = ap.parse_args()
    script = {}
    if a.script:
        with open(a.script) as f:
            script = json.load(f)
    sink = SmtpSink(script, record=a.record)
    print(sink.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    sink.stop()


if __name__ == "__main__":
    main()
