"""mxtest - servers on other loopback addresses than 127.0.0.1, for the
MX routing tests: MX targets of one route share one port, so each server
gets its own address (127.0.0.2, 127.0.0.3, ...) and the same port.

common_port(addrs)   a TCP port free on every address right now
AddrReceiver         a receiver Postfix whose smtpd listens on addr:port
                     (the address in master.cf's service name, TESTING.md)
AddrSink             the scripted server (smtpsink) on addr:port
require_dns()        skip the file unless root, a built agent and unbound
start_dns(records)   the test zone in unbound, stopped at exit
"""

import os
import socket
import threading

import dnsserver
import rrtest
from postfix import Receiver
from smtpsink import SmtpSink


def require_dns():
    """require_dns - skip the whole file unless it runs as root with a
    built agent and Debian's unbound."""
    rrtest.require_root()
    rrtest.agent_binary()
    if not os.access(dnsserver.UNBOUND, os.X_OK):
        rrtest.skip_all("unbound is not installed")


def start_dns(records=()):
    """start_dns - unbound serving the test zone plus RECORDS (lines
    relative to "test."), stopped when the file ends."""
    dns = dnsserver.Unbound(records=records)
    rrtest.at_cleanup(dns.stop)
    return dns


def common_port(addrs):
    """common_port - a TCP port free on every loopback address in ADDRS."""
    for _ in range(50):
        socks = []
        try:
            s = socket.socket()
            socks.append(s)
            s.bind((addrs[0], 0))
            port = s.getsockname()[1]
            for a in addrs[1:]:
                t = socket.socket()
                socks.append(t)
                t.bind((a, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    rrtest.bail("no port free on %s" % ", ".join(addrs))


class AddrReceiver(Receiver):
    """AddrReceiver - a receiver Postfix on ADDR:PORT."""

    def __init__(self, name, addr, port, **kw):
        super().__init__(name, **kw)
        self.addr, self.port = addr, port

    def write_config(self):
        super().write_config()
        path = os.path.join(self.etc, "master.cf")
        text = rrtest.read_file(path).replace(
            "127.0.0.1:%d inet" % self.port,
            "%s:%d inet" % (self.addr, self.port))
        rrtest.write_file(path, text)


class AddrSink(SmtpSink):
    """AddrSink - the scripted server on ADDR:PORT; stopped at exit."""

    def __init__(self, addr, port, script=None):
        super().__init__(script)
        self.addr, self.want_port = addr, port

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.addr, self.want_port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        rrtest.at_cleanup(self.stop)
        return self.port
