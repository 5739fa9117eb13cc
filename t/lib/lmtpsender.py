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

# master.cf.example's LMTP lines, with the test's user and paths
MASTER_LMTP = """\
rapidretry-lmtp unix - n n - 20 spawn
  user={user} argv={binary} --lmtp -c {conf}
rapidretry unix - - n - - lmtp
  -o lmtp_send_xforward_command=yes
  -o lmtp_data_done_timeout=600s
  -o lmtp_connection_cache_on_demand=yes
"""


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
        self.master_extra = MASTER_LMTP.format(user=rrtest.TEST_USER,
                                               binary=a.binary, conf=a.conf)
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
            self.main["import_environment"] = " ".join(
                ["MAIL_CONFIG", "MAIL_DEBUG", "MAIL_LOGTAG", "TZ",
                 "LANG=C", "POSTLOG_SERVICE", "POSTLOG_HOSTNAME"]
                + ["%s=%s" % kv for kv in env.items()])
            self.main["export_environment"] = (
                "TZ MAIL_CONFIG LANG " + " ".join(env))
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
