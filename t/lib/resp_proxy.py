"""resp_proxy - a RESP (Redis protocol) proxy that injects faults, for the
fleet state's tests (DESIGN §12): it listens on a unix socket or on
127.0.0.x, forwards every connection to a redis-server the test started
itself (RedisServer below: never a system-wide one), and parses both
directions enough to count commands and replies, pipelined or not.

A script is a list of rules; each fires at the Nth command (on = "cmd")
or the Nth reply (on = "reply") counted over all connections since the
script was set, or when the replies passed sum up to N bytes (on =
"byte"). MATCH narrows what is counted: a command name ("EVALSHA",
"SCRIPT", "HMGET") or the name of one of the agent's Lua scripts as the
proxy recognises it from its SCRIPT LOAD ("acquire", "opened",
"release", "renew", "limits"). TIMES (default 1) consecutive matches
fire. Kinds:
  stall      the reply (and all behind it) held MS milliseconds
  drop       the connection closed: on "cmd" before the command reaches
             Redis; on "reply"/"byte" after CUT bytes of the reply (half
             of it by default: a reply cut in the middle)
  garbage    the reply replaced by non-RESP bytes (BYTES, default
             "hello, this is not RESP\r\n")
  wrongtype  the reply replaced by ":1\r\n" (an integer where a bulk or
             an array is expected), or by BYTES
  truncated  the reply replaced by a bulk shorter than it says, then the
             connection closed ("silent": then nothing more, a stall)
  error      the command not run; the error ERROR answered instead
             (OOM, NOSCRIPT, BUSY, LOADING below, or any "-..." text)
On "cmd" every kind applies to that command's reply (for error the
command never reaches Redis, as when Redis refuses it).
refuse() closes the listener (connections refused) until accept();
blackhole() keeps accepting but answers nothing; hang() (on 127.0.0.x)
leaves the listener's queue full, so a connect waits for its timeout.

events lists what happened: (conn, "cmd", n, label) and (conn,
"fault", kind, label); labels() the command labels in order."""

import hashlib
import os
import socket
import subprocess
import threading
import time

import rrtest

OOM = "-OOM command not allowed when used memory > 'maxmemory'."
NOSCRIPT = "-NOSCRIPT No matching script. Please use EVAL."
BUSY = ("-BUSY Redis is busy running a script. You can only call "
        "SCRIPT KILL or SHUTDOWN NOSAVE.")
LOADING = "-LOADING Redis is loading the dataset in memory"
ERRORS = {"oom": OOM, "noscript": NOSCRIPT, "busy": BUSY,
          "loading": LOADING}


class RedisServer:
    """RedisServer - a redis-server of the test's own on a unix socket in
    DIRECTORY (no TCP port, no persistence)."""

    def __init__(self, directory, extra=()):
        self.dir = directory
        self.sock = os.path.join(directory, "redis.sock")
        self.extra = list(extra)
        self.proc = None

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock,
             "--unixsocketperm", "777", "--save", "", "--appendonly", "no",
             "--dir", self.dir] + self.extra,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        rrtest.at_cleanup(self.stop)
        rrtest.wait_until(lambda: self.ping(), 10, what="redis-server")
        return self.sock

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def command(self, *args):
        """command - one command, its reply parsed (None when Redis does
        not answer within 2 s)"""
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(self.sock)
            s.sendall(encode_command(args))
            v = read_value(_Reader(s))[0]
            s.close()
            return v
        except (OSError, ProtocolError):
            return None

    def ping(self):
        return self.command("PING") == "PONG"


def _die_with_parent():
    """_die_with_parent - the server killed when the test process ends
    (a campaign's pool workers end without their cleanups)"""
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)       # PR_SET_PDEATHSIG, SIGKILL


def encode_command(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class ProtocolError(Exception):
    pass


class _Reader:
    """_Reader - buffered reads from a socket; EOF raises EOFError"""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ProtocolError("line too long")
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_value(rd):
    """read_value - one RESP2 value from RD: (parsed, its raw bytes).
    Bulk and simple strings are str, errors ("-", text), arrays lists."""
    ln = rd.line()
    t, body = ln[:1], ln[1:-2]
    if t == b"+":
        return body.decode(errors="replace"), ln
    if t == b"-":
        return ("-", body.decode(errors="replace")), ln
    if t == b":":
        return int(body), ln
    if t == b"$":
        n = int(body)
        if n < 0:
            return None, ln
        data = rd.exact(n + 2)
        return data[:-2].decode(errors="replace"), ln + data
    if t == b"*":
        n = int(body)
        if n < 0:
            return None, ln
        items, raw = [], ln
        for _ in range(n):
            v, r = read_value(rd)
            items.append(v)
            raw += r
        return items, raw
    # an inline command (a client may send one): words on a line
    return [w.decode(errors="replace") for w in ln.split()], ln


def script_name(text):
    """script_name - which of the agent's scripts TEXT is (see
    schedule-redis.c), by what only that one does"""
    if "'go'" in text:
        return "acquire"
    if "'sessions'" in text:
        return "opened"
    if "'by'" in text:
        return "limits"
    if "ZADD" in text:
        return "renew"
    if "ZREM" in text:
        return "release"
    return "script"


class RespProxy:
    """RespProxy - see the module's text. UPSTREAM: the redis-server's
    unix socket; LISTEN: a unix socket path, or (address, port)."""

    def __init__(self, upstream, listen):
        self.upstream, self.listen = upstream, listen
        self.lock = threading.Lock()
        self.rules = []
        self.counts = {}
        self.events = []
        self.shas = {}              # sha1 -> script name
        self.conns = []
        self.nconn = 0
        self.sock = None
        self.black = False
        self.stopping = False
        self.addr = None
        self.fillers = []

    # --- control -------------------------------------------------------

    def start(self):
        self._listen()
        rrtest.at_cleanup(self.stop)
        return self.addr

    def _listen(self):
        if isinstance(self.listen, str):
            if os.path.exists(self.listen):
                os.unlink(self.listen)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(self.listen)
            os.chmod(self.listen, 0o777)
            self.addr = "unix:" + self.listen
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(self.listen)
            self.listen = s.getsockname()
            self.addr = "%s:%d" % self.listen
        s.listen(64)
        s.settimeout(0.2)
        self.sock = s
        self.thread = threading.Thread(target=self._accept, args=(s,),
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.refuse()
        self.hangup()

    def refuse(self):
        """refuse - the listener closed: connecting is refused (a unix
        socket file left without a listener: ECONNREFUSED)"""
        s, self.sock = self.sock, None
        if s is not None:
            s.close()
            self.thread.join(2)

    def accept(self):
        """accept - listening again after refuse() or hang()"""
        for f in self.fillers:
            f.close()
        self.fillers = []
        if self.sock is None and not self.stopping:
            self._listen()

    def hang(self):
        """hang - TCP only: a listener that never accepts, its queue
        filled, so that a new connection's SYN goes unanswered"""
        assert not isinstance(self.listen, str)
        self.refuse()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.listen)
        s.listen(0)
        self.fillers = [s]
        for _ in range(4):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(self.listen)
            self.fillers.append(f)
        time.sleep(0.1)

    def blackhole(self, on=True):
        """blackhole - new connections accepted, never answered"""
        self.black = on

    def hangup(self):
        """hangup - every open connection closed"""
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            c.close()

    def set_script(self, rules):
        """set_script - RULES from now on, counted from zero"""
        with self.lock:
            self.rules = [dict(r, left=r.get("times", 1)) for r in rules]
            self.counts = {}
            self.events = []

    def fired(self):
        """fired - the faults injected since set_script"""
        with self.lock:
            return [e for e in self.events if e[1] == "fault"]

    def labels(self):
        with self.lock:
            return [e[3] for e in self.events if e[1] == "cmd"]

    # --- matching --------------------------------------------------------

    def _match(self, on, label, name, size=0):
        """_match - the rule firing now for a command or reply (label
        LABEL, command NAME), or None; counts it. lock held."""
        hit = None
        for i, r in enumerate(self.rules):
            if r.get("on", "cmd") != on or r["left"] <= 0:
                continue
            m = r.get("match")
            if m is not None and m != label and m.upper() != name:
                continue
            if on == "byte":
                before = self.counts.get(i, 0)
                self.counts[i] = before + size
                if before < r["n"] <= before + size and hit is None:
                    hit = dict(r, cut=r["n"] - before)
                    r["left"] -= 1
                continue
            self.counts[i] = self.counts.get(i, 0) + 1
            if self.counts[i] >= r["n"] and hit is None:
                hit = r
                r["left"] -= 1
        return hit

    def _label(self, cmd):
        if not isinstance(cmd, list) or not cmd:
            return "?", "?"
        name = str(cmd[0]).upper()
        if name == "SCRIPT" and len(cmd) > 2 and \
                str(cmd[1]).upper() == "LOAD":
            text = cmd[2]
            sha = hashlib.sha1(text.encode()).hexdigest()
            with self.lock:
                self.shas[sha] = script_name(text)
            return "load:" + script_name(text), name
        if name in ("EVALSHA", "EVAL") and len(cmd) > 1:
            sha = str(cmd[1])
            if name == "EVAL":
                sha = hashlib.sha1(sha.encode()).hexdigest()
            with self.lock:
                return self.shas.get(sha, "script"), name
        return name.lower(), name

    # --- connections -----------------------------------------------------

    def _accept(self, ls):
        while not self.stopping and self.sock is ls:
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            with self.lock:
                self.nconn += 1
                conn = _Conn(self, c, self.nconn)
                self.conns.append(conn)
            conn.start()


class _Conn:
    """_Conn - one client connection: a reader thread parses commands and
    queues what answers each (Redis, or an injected reply); a writer
    thread answers in order."""

    def __init__(self, proxy, client, cid):
        import queue
        self.p, self.client, self.id = proxy, client, cid
        self.up = None
        self.q = queue.Queue()
        self.closed = False

    def start(self):
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def close(self):
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.up):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.q.put(None)

    def _event(self, *e):
        with self.p.lock:
            self.p.events.append((self.id,) + e)

    def _read(self):
        try:
            if not self.p.black:
                self.up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.up.connect(self.p.upstream)
            rd = _Reader(self.client)
            n = 0
            while not self.closed:
                cmd, raw = read_value(rd)
                n += 1
                label, name = self.p._label(cmd)
                self._event("cmd", n, label)
                if self.p.black:
                    continue
                with self.p.lock:
                    rule = self.p._match("cmd", label, name)
                if rule is not None:
                    self._event("fault", rule["kind"], label)
                if rule is not None and rule["kind"] == "drop":
                    break
                if rule is not None and rule["kind"] == "error":
                    e = ERRORS.get(rule.get("error", "oom"),
                                   rule.get("error"))
                    self.q.put(("inject", label, name,
                                e.encode() + b"\r\n"))
                    continue
                self.up.sendall(raw)
                self.q.put(("up", label, name, rule))
        except (OSError, EOFError, ProtocolError, ValueError):
            pass
        self.q.put(("close",))

    def _write(self):
        rd = None
        try:
            while True:
                item = self.q.get()
                if item is None or item[0] == "close":
                    break
                if item[0] == "inject":
                    self._reply(item[1], item[2], item[3], None)
                    continue
                if rd is None:
                    rd = _Reader(self.up)
                _, raw = read_value(rd)
                if not self._reply(item[1], item[2], raw, item[3]):
                    break
        except (OSError, EOFError, ProtocolError, ValueError):
            pass
        self.close()

    def _reply(self, label, name, raw, rule):
        """_reply - RAW to the client, or the fault of RULE (the command's
        own) or of a reply rule; FALSE when the connection is to end"""
        p = self.p
        with p.lock:
            r2 = p._match("reply", label, name)
            r3 = p._match("byte", label, name, len(raw))
        if rule is None and (r2 or r3) is not None:
            rule = r2 or r3             # a reply rule: logged here
            self._event("fault", rule["kind"], label)
        if rule is None:
            self.client.sendall(raw)
            return True
        kind = rule["kind"]
        if kind == "error":             # run, but answered with an error
            e = ERRORS.get(rule.get("error", "oom"), rule.get("error"))
            self.client.sendall(e.encode() + b"\r\n")
            return True
        if kind == "stall":
            time.sleep(rule.get("ms", 1000) / 1000.0)
            if self.closed:
                return False
            self.client.sendall(raw)
            return True
        if kind == "drop":
            cut = rule.get("cut", len(raw) // 2)
            self.client.sendall(raw[:cut])
            return False
        if kind == "garbage":
            self.client.sendall(rule.get("bytes",
                                         b"hello, this is not RESP\r\n"))
            return True
        if kind == "wrongtype":
            self.client.sendall(rule.get("bytes", b":1\r\n"))
            return True
        if kind == "truncated":
            self.client.sendall(b"$40\r\nshorter than it says")
            if rule.get("silent"):
                while not self.closed:
                    time.sleep(0.05)
            return False
        raise ValueError("resp_proxy: unknown fault kind %r" % kind)
