"""dsnmail - a sender Postfix whose own domain (src.test) is delivered
to a local Maildir, so the DSNs the agent submits can be read back; and
helpers to parse them."""

import email
import glob
import os
import pwd
import re

import altconf
import rrtest
from postfix import Sender


class DsnSender(Sender):
    """DsnSender - Sender + a Maildir for src.test + postdrop trust."""

    def __init__(self, name, relay_port, agent_extra_text="", **kw):
        nobody = pwd.getpwnam("nobody")
        agent = rrtest.Agent(name=name + "/agent",
                             relay="[127.0.0.1]:%d" % relay_port,
                             extra_text=agent_extra_text,
                             dsn_sendmail=None)
        super().__init__(name, relay_port=relay_port, agent=agent, **kw)
        self.vbase = rrtest.subdir(name + "/vmail", owner="nobody")
        self.maildir = os.path.join(self.vbase, "all")
        self.main.update({
            "virtual_mailbox_domains": "src.test",
            "virtual_mailbox_maps": "static:all/",
            "virtual_mailbox_base": self.vbase,
            "virtual_uid_maps": "static:%d" % nobody.pw_uid,
            "virtual_gid_maps": "static:%d" % nobody.pw_gid,
        })
        altconf.allow(self.etc)

    def mailbox(self):
        """mailbox - [email.message.Message] in the src.test Maildir."""
        files = []
        for d in ("new", "cur"):
            files += glob.glob(os.path.join(self.maildir, d, "*"))
        files.sort(key=lambda f: (os.stat(f).st_mtime_ns, f))
        res = []
        for f in files:
            with open(f, "rb") as fh:
                res.append(email.message_from_bytes(fh.read()))
        return res

    def log_db(self):
        """log_db - the agent's delivery log database path."""
        j = self.agent.journal
        return j[:-3] + "-log.db" if j.endswith(".db") else j + "-log"


def dsn_parts(msg):
    """dsn_parts - (per-recipient field dicts, human text, returned part
    content type) of a multipart/report message, or None."""
    if msg.get_content_type() != "multipart/report":
        return None
    parts = msg.get_payload()
    human = parts[0].get_payload(decode=True).decode(errors="replace")
    status = parts[1]
    blocks = []
    # message/delivery-status: email parses it into a list of Messages
    groups = status.get_payload()
    for g in groups[1:]:
        blocks.append({k.lower(): re.sub(r"\s+", " ", v)
                       for k, v in g.items()})
    return blocks, human, parts[2].get_content_type()
