#!/usr/bin/env python3
# 12-sink-hostile.t - smtpsink's hostile features, driven by a raw client
# (no agent): a drop mid-body, bytes that are no text (NUL, 8-bit, no line
# end), a flood of continuation lines, any verb by name (STARTTLS), MAIL
# refused but the transaction taken (against RFC 2920), and the ground
# truth: a message queued although its reply was lost counts as taken,
# not clean.
import os
import socket
import sys
import time
sys.dont_write_bytecode = True

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "lib"))
import rrtest
from rrtest import ok, is_, done
from smtpsink import SmtpSink


def chat(port, payload, timeout=5):
    """chat - send PAYLOAD at once, read until the server closes or goes
    quiet; returns the raw bytes received."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf = b""
    try:
        s.sendall(payload)
        s.settimeout(1.0)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                d = s.recv(1 << 20)
            except socket.timeout:
                break
            if not d:
                break
            buf += d
    finally:
        s.close()
    return buf


def sink_for(script):
    sink = SmtpSink(script)
    port = sink.start()
    rrtest.at_cleanup(sink.stop)
    return sink, port


HEAD = b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@d1.test>\r\n"

# --- a drop after two body lines --------------------------------------------
sink, port = sink_for({"ehlo": ["ENHANCEDSTATUSCODES"],
                       "rules": [{"cmd": "BODY", "after": 2,
                                  "action": "drop"}]})
got = chat(port, HEAD + b"DATA\r\nl1\r\nl2\r\nl3\r\n.\r\nQUIT\r\n")
ok(b"354 " in got and b"221 " not in got and not got.endswith(b"250 2.0.0"),
   "BODY drop: 354, then the connection ends without a reply")
is_(sink.messages(), [], "BODY drop: nothing taken")
rrtest.wait_until(lambda: sink.active() == 0, 5)
is_(sink.active(), 0, "active(): the session has ended")

# --- NUL, 8-bit bytes and a missing line end ---------------------------------
sink, port = sink_for({"rules": [
    {"cmd": "MAIL", "raw": ["250-ok\x00\xff\xfe", "250 ok\\"]}]})
got = chat(port, b"EHLO c.test\r\nMAIL FROM:<s@x.test>\r\n")
ok(b"250-ok\x00\xff\xfe\r\n250 ok" in got and not got.endswith(b"\r\n"),
   "raw items go out as bytes; a trailing backslash drops the line end")

# --- a flood of continuation lines ------------------------------------------
sink, port = sink_for({"rules": [
    {"cmd": "EHLO", "raw": [{"repeat": "250-" + "y" * 70, "count": 20000},
                            "250 ok"]}]})
got = chat(port, b"EHLO c.test\r\n", timeout=10)
is_(got.count(b"250-yyy"), 20000, "flood: 20000 continuation lines")
ok(got.endswith(b"250 ok\r\n"), "flood: then the final line")
ok(len(sink.transcript()) < 10, "flood: the transcript keeps one entry")

# --- a rule for any verb by name ---------------------------------------------
sink, port = sink_for({"ehlo": ["STARTTLS"], "rules": [
    {"cmd": "STARTTLS", "reply": "454 4.7.0 TLS not available now"}]})
got = chat(port, b"EHLO c.test\r\nSTARTTLS\r\nQUIT\r\n")
ok(b"454 4.7.0 TLS not available now\r\n" in got, "STARTTLS rule by name")

# --- MAIL refused, the transaction taken all the same -----------------------
sink, port = sink_for({"rules": [
    {"cmd": "MAIL", "reply": "550 5.7.1 go away", "action": "take"}]})
got = chat(port, HEAD + b"DATA\r\nbody\r\n.\r\nQUIT\r\n")
ok(b"550 5.7.1 go away" in got and b"354 " in got,
   "take: MAIL refused, RCPT and DATA accepted anyway")
is_([m["rcpts"] for m in sink.messages()], [["a@d1.test"]],
    "take: the message counts as taken")

# --- ground truth: taken, reply lost ----------------------------------------
sink, port = sink_for({"rules": [
    {"cmd": "DOT", "action": "drop", "taken": True, "times": 1}]})
chat(port, HEAD + b"DATA\r\nbody\r\n.\r\n")
sink2, port2 = sink_for({"rules": [{"cmd": "DOT", "action": "drop"}]})
chat(port2, HEAD + b"DATA\r\nbody\r\n.\r\n")
sink3, port3 = sink_for({})
chat(port3, HEAD + b"DATA\r\nbody\r\n.\r\nQUIT\r\n")
is_([(m["rcpts"], m["clean"]) for m in sink.messages()],
    [(["a@d1.test"], False)], "taken drop after the dot: taken, not clean")
is_(sink2.messages(), [], "plain drop after the dot: not taken")
is_([m["clean"] for m in sink3.messages()], [True],
    "a 250 sent in full: clean")

# --- set_script: well-behaved from now on -----------------------------------
sink.set_script({})
got = chat(port, HEAD + b"DATA\r\nbody\r\n.\r\nQUIT\r\n")
ok(b"250 2.0.0 Ok: queued" in got, "set_script: the rules are gone")
done()
