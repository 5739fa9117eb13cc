"""dnsserver.py - DNS servers on loopback for the routing tests.

Unbound(): Debian's unbound in the foreground on 127.0.0.1 and a port
chosen at run time, authoritative for the test zone below (auth-zone
"test."), with a stub zone "broken." whose only server is a loopback
address unbound may not query (do-not-query-localhost): an unreachable
server, so SERVFAIL.
FakeDns(): a tiny UDP/TCP responder in a thread for exact bad answers:
"garbage" (random bytes), "badanswer" (right id and question, broken
answer section), "servfail", "refused", "drop" (never answers).
Both clean up after themselves (stop(), or use them as context managers).
"""
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

UNBOUND = os.environ.get("RR_UNBOUND", "/usr/sbin/unbound")


def _zone(records=()):
    z = ["$ORIGIN test.", "$TTL 300",
         "@ SOA ns.test. hostmaster.test. 1 3600 600 86400 300",
         "@ NS ns.test.",
         "ns A 127.0.0.1",
         # two domains sharing one MX
         "shared-a MX 10 mx-shared.test.",
         "shared-b MX 10 mx-shared.test.",
         "mx-shared A 127.0.0.2",
         # two preferences, the better one refuses connections
         "twopref MX 20 mx-good.test.",
         "twopref MX 10 mx-refuse.test.",
         "mx-refuse A 127.0.0.3",
         "mx-good A 127.0.0.4",
         # no MX: implicit MX (RFC 5321 5.1)
         "implicit A 127.0.0.5",
         # neither MX nor address
         "nodata TXT \"no mail\"",
         # null MX (RFC 7505)
         "nullmx MX 0 .",
         # MX hosts without address
         "noaddr MX 10 mx-none.test.",
         "noaddr2 MX 10 mx-none.test.",
         "noaddr2 MX 20 mx-good.test.",
         "mx-noa TXT \"no address\"",
         "noaddr3 MX 10 mx-noa.test.",
         # MX pointing to a CNAME
         "cname MX 10 mx-alias.test.",
         "mx-alias CNAME mx-good.test.",
         # equal preferences: the same order for the same set
         "equal-a MX 10 mx-e1.test.",
         "equal-a MX 10 mx-e2.test.",
         "equal-a MX 10 mx-e3.test.",
         "equal-b MX 10 mx-e3.test.",
         "equal-b MX 10 mx-e1.test.",
         "equal-b MX 10 mx-e2.test.",
         "mx-e1 A 127.0.0.11",
         "mx-e2 A 127.0.0.12",
         "mx-e3 A 127.0.0.13",
         # IPv6 and IPv4
         "dual MX 10 mx-dual.test.",
         "mx-dual A 127.0.0.7",
         "mx-dual AAAA ::1",
         # several addresses for one host
         "multi MX 10 mx-multi.test.",
         "multi MX 20 mx-good.test.",
         "mx-multi A 127.0.0.21",
         "mx-multi A 127.0.0.22",
         "mx-multi A 127.0.0.23",
         # a zone= view: the real MX and the hosting provider's one
         "customer MX 10 mx-shared.test.",
         "customer.test.hosted MX 10 mx-hosted.test.",
         "sub.customer.test.hosted MX 10 mx-hosted.test.",
         "shared-a.test.hosted MX 10 mx-hosted.test.",
         "mx-hosted A 127.0.0.6",
         ]
    # a domain with 100 MX records (answer > 512 bytes: TCP fallback)
    for i in range(100):
        z.append("big MX %d mx-big-%03d.test." % (10 + i % 3, i))
        z.append("mx-big-%03d A 127.0.1.%d" % (i, i + 1))
    z.extend(records)
    return "\n".join(z) + "\n"


def free_port(kind=socket.SOCK_DGRAM):
    """A port that is free for UDP and TCP right now on 127.0.0.1."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        return port
    raise RuntimeError("no free port")


def query(port, name, qtype=15, timeout=0.5):
    """One UDP query; the rcode, or None when nothing came back."""
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        pkt += bytes([len(label)]) + label.encode()
    pkt += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(pkt, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
        if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
            return data[3] & 15
    except OSError:
        return None
    finally:
        s.close()
    return None


class Unbound:
    """unbound on 127.0.0.1:port, authoritative for "test."; RECORDS are
    extra zone lines (relative to "test.") for one test."""

    def __init__(self, deadline=20, records=()):
        self.dir = tempfile.mkdtemp(prefix="rr-unbound-")
        self.proc = None
        with open(os.path.join(self.dir, "test.zone"), "w") as f:
            f.write(_zone(records))
        end = time.monotonic() + deadline
        while self.proc is None and time.monotonic() < end:
            self._start(end)

    def _start(self, end):
        self.port = free_port()
        dead = free_port()        # nobody listens; unbound may not ask
        conf = os.path.join(self.dir, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    interface: 127.0.0.1@{self.port}
    port: {self.port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{self.dir}"
    pidfile: "{self.dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-ip6: no
    so-reuseport: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    outgoing-range: 64
    msg-cache-size: 1m
    rrset-cache-size: 1m
    infra-cache-numhosts: 100
    unwanted-reply-threshold: 0
    minimal-responses: no
    qname-minimisation: no
    infra-host-ttl: 1
    infra-keep-probing: no
    local-zone: "test." nodefault
    local-zone: "broken." nodefault
auth-zone:
    name: "test."
    zonefile: "{self.dir}/test.zone"
    for-downstream: yes
    for-upstream: yes
    fallback-enabled: no
stub-zone:
    name: "broken."
    stub-addr: 127.0.0.1@{dead}
remote-control:
    control-enable: no
""")
        self.log = open(os.path.join(self.dir, "unbound.log"), "w")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", conf],
                                     stdout=self.log, stderr=self.log)
        while time.monotonic() < end:
            if self.proc.poll() is not None:     # port taken? try again
                self.proc = None
                return
            if query(self.port, "shared-a.test") == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("unbound did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class FakeDns:
    """A responder for exact bad answers, on 127.0.0.1:port (UDP, TCP)."""

    def __init__(self, mode):
        self.mode = mode
        for _ in range(50):      # a UDP port whose TCP twin is free too
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
        else:
            raise RuntimeError("no free UDP+TCP port")
        self.tcp.listen(8)
        self.stopping = False
        self.queries = 0
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self.threads:
            t.start()

    def answer(self, q):
        """The reply to query Q (bytes), or None."""
        self.queries += 1
        if self.mode == "drop" or len(q) < 12:
            return None
        if self.mode == "garbage":
            return q[:2] + os.urandom(random.randrange(1, 40))
        # question section: header (12) + name + type + class
        end = q.index(b"\0", 12) + 5
        flags = 0x8180
        if self.mode == "servfail":
            return q[:2] + struct.pack(">HHHHH", flags | 2, 1, 0, 0, 0) + \
                q[12:end]
        if self.mode == "refused":
            return q[:2] + struct.pack(">HHHHH", flags | 5, 1, 0, 0, 0) + \
                q[12:end]
        # badanswer: one answer announced, a record cut in the middle
        return q[:2] + struct.pack(">HHHHH", flags, 1, 1, 0, 0) + \
            q[12:end] + b"\xc0\x0c\x00\x0f\x00\x01\x00\x00"

    def _serve_udp(self):
        self.udp.settimeout(0.2)
        while not self.stopping:
            try:
                q, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            a = self.answer(q)
            if a is not None:
                self.udp.sendto(a, peer)

    def _serve_tcp(self):
        self.tcp.settimeout(0.2)
        while not self.stopping:
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(2)
                try:
                    n = struct.unpack(">H", c.recv(2))[0]
                    a = self.answer(c.recv(n))
                    if a is not None:
                        c.sendall(struct.pack(">H", len(a)) + a)
                except (OSError, struct.error):
                    pass

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join()
        self.udp.close()
        self.tcp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    # manual use: start unbound and print its port until interrupted
    with Unbound() as u:
        print(u.port, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
