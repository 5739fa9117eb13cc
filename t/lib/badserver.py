"""badserver - a TCP server on 127.0.0.1 that is a bad SMTP server on
purpose, counting exactly what the clients do to it:
  tarpit  accepts and never sends a byte (until the client leaves)
  421     greets "421 4.3.2 Service not available, closing channel" and
          closes, as a busy server does
  close   accepts and closes at once
connections (total), active (open now) and max_active (most at once) are
counted at accept and at the client's close."""

import socket
import threading

import rrtest


class BadServer:
    def __init__(self, mode="tarpit", port=0, addr="127.0.0.1"):
        self.mode, self.addr, self.want_port = mode, addr, port
        self.lock = threading.Lock()
        self.connections = self.active = self.max_active = 0
        self.socks = []
        self.stopping = False
        self.sock = None
        self.port = None

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.addr, self.want_port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        rrtest.at_cleanup(self.stop)
        return self.port

    def stop(self):
        """stop - close the listener (its port is free on return) and
        every client connection."""
        self.stopping = True
        if self.sock is not None:
            self.thread.join(2)
            self.sock.close()
            self.sock = None
        for c in list(self.socks):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def reset(self):
        """reset - the counters start again from the sessions open now."""
        with self.lock:
            self.connections = 0
            self.max_active = self.active

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            self.socks.append(c)
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        try:
            if self.mode == "421":
                c.sendall(b"421 4.3.2 Service not available, closing "
                          b"channel\r\n")
            elif self.mode == "tarpit":
                while not self.stopping and c.recv(4096):
                    pass
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
            with self.lock:
                self.active -= 1

    def counts(self):
        with self.lock:
            return self.connections, self.active, self.max_active
