"""lmtpsender - a throw-away sending Postfix that hands its mail to
rapidretry in LMTP mode (DESIGN §9): a dedicated lmtp client service
"rapidretry" -> unix socket private/rapidretry-lmtp -> spawn(8) ->
rapidretry-agent --lmtp, as master.cf.example shows it.
"""

import os
import re
import smtplib

import rrtest
from postfix import QID, Sender

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def master_lmtp(user, binary, conf):
    """master_lmtp - master.cf.example's LMTP-mode lines (commented out
    there), uncommented, with the test's user and paths: the tests run
    the example as written."""
    text = rrtest.read_file(os.path.join(TOP, "master.cf.example"))
    part = text.split("sending side in LMTP mode", 1)[1]
    part = part[part.index("\n#rapidretry") + 1:]
    lines = [l[1:] for l in part.splitlines()
             if re.match(r"#(rapidretry|  \S)", l)]
    out = "\n".join(lines) + "\n"
    return (out.replace("/usr/local/libexec/rapidretry/rapidretry-agent",
                        binary)
            .replace("/etc/rapidretry/rapidretry.conf", conf)
            .replace("user=rapidretry", "user=" + user))


class LmtpSender(Sender):
    """LmtpSender - default_transport = rapidretry:unix:private/rapidretry-
    lmtp; ENV (dict) goes to the agent through spawn(8)."""

    def __init__(self, name="sender", relay_port=None, agent=None,
                 main=None, env=None):
        super().__init__(name, relay_port=relay_port or 25, smtp=True)
        rrtest.ensure_user()
        self.agent = agent or rrtest.Agent(
            name=name + "/agent", relay="[127.0.0.1]:%d" % relay_port)
        a = self.agent
        self.master_extra = master_lmtp(rrtest.TEST_USER, a.binary, a.conf)
        self.main.update({
            "default_transport":
                "rapidretry:unix:private/rapidretry-lmtp",
            "relayhost": "",
            # spawn(8)'s time limit for the service, set explicitly: the
            # agent's [lmtp] time_limit says the same
            "rapidretry-lmtp_time_limit": "1000s",
        })
        env = dict(env or {})
        if rrtest.ASAN:
            env.update(rrtest.asan_options())
        if env:
            self.pass_environment(env)
        self.main.update(main or {})

    def submit_smtp(self, sender, rcpts, message=None, mail_options=(),
                    rcpt_options=()):
        """submit_smtp - through the sender's own smtpd, so its lmtp
        client has client attributes to send with XFORWARD (IDENT among
        them); returns the queue id."""
        if message is None:
            message = rrtest.sample_message(sender, rcpts)
        mark = self.mark()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("client.test")
            c.sendmail(sender, list(rcpts), message.encode(),
                       list(mail_options), list(rcpt_options))
        lines = self.wait_log(r"smtpd\[\d+\]: %s: client=" % QID, since=mark)
        m = re.search(r": (%s): client=" % QID, lines[0]) if lines else None
        return m.group(1) if m else None
