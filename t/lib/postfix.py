"""postfix - throw-away Postfix 3.7 instances for rapidretry's tests.

Each instance has its own config, queue, data and log directories under
the test's tmpdir, listens on 127.0.0.1:PORT, logs through postlogd to a
file and is stopped at exit. Roles: a receiver that stores every message
in one Maildir (optionally behind rapidretry-milter, DESIGN.md §8), a
sender that hands mail to rapidretry-agent through pipe(8) (DESIGN.md §3),
and a sender that uses Postfix's own smtp client.
"""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time

import rrtest

# Every service chroot n; smtpd is added per instance.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

QID = r"[0-9A-F]{6,}"

# main.cf.example, receiving side: set with smtpd_milters by
# Receiver(milter=...)
MILTER_MAIN = {
    "milter_default_action": "accept",
    "milter_protocol": "6",
    "smtpd_soft_error_limit": "100",
    "smtpd_hard_error_limit": "200",
}


class Postfix:
    """Postfix - one instance; subclasses set the role's main.cf."""

    def __init__(self, name, main=None, master_extra="", port=None):
        rrtest.require_root()
        self.name = name
        self.base = rrtest.subdir(name)
        self.etc = rrtest.subdir(name + "/etc")
        self.queue = rrtest.subdir(name + "/queue")
        self.data = rrtest.subdir(name + "/data", owner="postfix")
        self.logdir = rrtest.subdir(name + "/log")
        self.maillog = os.path.join(self.logdir, "maillog")
        # pipe(8) logs the agent's stderr, where UBSan's reports go
        rrtest.report_source(self.log)
        self.port = port or rrtest.free_port()
        self.started = False
        self.main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "myhostname": name + ".test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.logdir,
            "syslog_name": "%s-%d" % (name, os.getpid()),
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtp_dns_support_level": "disabled",
        }
        self.main.update(main or {})
        self.master_extra = master_extra
        rrtest.at_cleanup(self.stop)

    def write_config(self):
        """write_config - main.cf and master.cf from the settings."""
        text = "".join("%s = %s\n" % kv for kv in self.main.items())
        rrtest.write_file(os.path.join(self.etc, "main.cf"), text)
        master = ("127.0.0.1:%d inet n - n - - smtpd\n" % self.port
                  + MASTER_CF + self.master_extra)
        rrtest.write_file(os.path.join(self.etc, "master.cf"), master)

    def postfix(self, *args, check=True):
        """postfix - run postfix(1) on this instance; fatals are shown."""
        p = subprocess.run(["postfix", "-c", self.etc] + list(args),
                           capture_output=True, text=True)
        if check and p.returncode != 0:
            rrtest.diag("postfix %s: rc=%d %s %s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr))
            rrtest.diag(rrtest.read_file(self.maillog)[-3000:])
        return p.returncode == 0

    def start(self):
        """start - write the config, start master, wait for smtpd's port."""
        self.write_config()
        if not self.postfix("check"):
            rrtest.bail("postfix check failed for %s" % self.name)
        if not self.postfix("start"):
            rrtest.bail("postfix start failed for %s" % self.name)
        self.started = True
        up = rrtest.wait_until(self._port_open, 20, what="smtpd port")
        if not up:
            rrtest.bail("%s: smtpd not listening on %d" % (self.name,
                                                          self.port))
        return self

    def _port_open(self):
        return rrtest.port_listening(self.port)

    def master_pid(self):
        """master_pid - the master's PID from its pid file, or None."""
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def reload(self):
        """reload - rewrite the config and reload."""
        self.write_config()
        return self.postfix("reload")

    def stop(self):
        """stop - postfix stop; kill the master by its PID if it stays."""
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        self.postfix("stop", check=False)
        if pid and not rrtest.wait_until(lambda: not _alive(pid), 10):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # --- log --------------------------------------------------------------

    def log(self):
        """log - the instance's maillog text."""
        return rrtest.read_file(self.maillog)

    def log_lines(self, since=0):
        """log_lines - maillog lines, from a mark() on."""
        return self.log()[since:].splitlines()

    def mark(self):
        """mark - a position in the log for log_lines(since=...)."""
        return len(self.log())

    def wait_log(self, regex, timeout=20, since=0, count=1):
        """wait_log - wait until regex matches count lines; returns them."""
        rx = re.compile(regex)

        def found():
            m = [l for l in self.log_lines(since) if rx.search(l)]
            return m if len(m) >= count else None
        return rrtest.wait_until(found, timeout, what="/%s/ in %s log" % (
            regex, self.name)) or []

    # --- queue ------------------------------------------------------------

    def queue_json(self):
        """queue_json - postqueue -j, one dict per queued message."""
        p = subprocess.run(["postqueue", "-c", self.etc, "-j"],
                           capture_output=True, text=True)
        return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]

    def queue_empty(self):
        """queue_empty - nothing in any queue."""
        return not self.queue_json()

    def flush(self):
        """flush - postqueue -f: retry deferred mail now."""
        subprocess.run(["postqueue", "-c", self.etc, "-f"],
                       capture_output=True)

    def pass_environment(self, env):
        """pass_environment - main.cf settings so that the processes
        Postfix starts (pipe(8), spawn(8)) get ENV (dict) on top of
        Postfix's own defaults."""
        self.main["import_environment"] = " ".join(
            ["MAIL_CONFIG", "MAIL_DEBUG", "MAIL_LOGTAG", "TZ",
             "LANG=C", "POSTLOG_SERVICE", "POSTLOG_HOSTNAME"]
            + ["%s=%s" % kv for kv in env.items()])
        self.main["export_environment"] = (
            "TZ MAIL_CONFIG LANG " + " ".join(env))


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


class Receiver(Postfix):
    """Receiver - stores mail for the test domains in one Maildir; with
    MILTER (a unix socket path) its smtpd asks that milter, with
    main.cf.example's receiving-side settings. MAIN comes last."""

    def __init__(self, name="receiver", domains=("d1.test", "d2.test"),
                 main=None, master_extra="", milter=None):
        nobody = pwd.getpwnam("nobody")
        super().__init__(name, master_extra=master_extra)
        self.vbase = rrtest.subdir(name + "/vmail", owner="nobody")
        self.maildir = os.path.join(self.vbase, "all")
        self.main.update({
            "virtual_mailbox_domains": " ".join(domains),
            "virtual_mailbox_maps": "static:all/",
            "virtual_mailbox_base": self.vbase,
            "virtual_uid_maps": "static:%d" % nobody.pw_uid,
            "virtual_gid_maps": "static:%d" % nobody.pw_gid,
            "virtual_destination_recipient_limit": "1",
            "default_transport": "discard",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "permit",
        })
        if milter:
            self.main.update(MILTER_MAIN, smtpd_milters="unix:" + milter)
        self.main.update(main or {})

    def messages(self):
        """messages - [(file, text)] of every delivered file."""
        res = []
        for d in ("new", "cur"):
            for f in sorted(glob.glob(os.path.join(self.maildir, d, "*"))):
                res.append((f, rrtest.read_file(f)))
        return res

    def delivered(self):
        """delivered - recipients (Delivered-To:) of each Maildir file,
        duplicates counted."""
        res = []
        for _, text in self.messages():
            head = text.split("\n\n", 1)[0]
            for m in re.finditer(r"^Delivered-To: *(\S+)", head, re.M | re.I):
                res.append(m.group(1).lower())
        return sorted(res)

    def wait_delivered(self, n, timeout=15):
        """wait_delivered - delivered() once it holds at least N
        recipients (or at the timeout)."""
        rrtest.wait_until(lambda: len(self.delivered()) >= n, timeout,
                          what="%d delivered in %s" % (n, self.name))
        return self.delivered()

    def connections(self, since=0):
        """connections - number of smtpd `connect from` lines."""
        return len([l for l in self.log_lines(since)
                    if re.search(r"smtpd\[\d+\]: connect from ", l)])

    def sessions(self, since=0):
        """sessions - smtpd's disconnect counters per connection:
        [{'mail': (ok, total), 'rcpt': (ok, total), ...}]."""
        res = []
        for l in self.log_lines(since):
            m = re.search(r"smtpd\[\d+\]: disconnect from \S+ (.*)$", l)
            if not m:
                continue
            counts = {}
            for k, v in re.findall(r"(\w+)=(\d+(?:/\d+)?)", m.group(1)):
                a, _, b = v.partition("/")
                counts[k] = (int(a), int(b or a))
            res.append(counts)
        return res

    def transactions(self, since=0):
        """transactions - total accepted MAIL commands over sessions."""
        return sum(s.get("mail", (0, 0))[0] for s in self.sessions(since))

    def nrcpts(self, since=0):
        """nrcpts - recipients per received message (qmgr nrcpt=)."""
        return [int(n) for n in re.findall(r"qmgr\[\d+\]: %s: from=<[^>]*>,"
                                           r" size=\d+, nrcpt=(\d+)" % QID,
                                           "\n".join(self.log_lines(since)))]


class Sender(Postfix):
    """Sender - hands outgoing mail to rapidretry-agent through pipe(8)
    (DESIGN.md §3), or with smtp=True to Postfix's own smtp client."""

    def __init__(self, name="sender", relay_port=None, transport=None,
                 smtp=False, agent=None, main=None, recipient_limit=50):
        super().__init__(name)
        self.agent = None
        if smtp:
            self.main.update({"default_transport": "smtp",
                              "relayhost": "[127.0.0.1]:%d" % relay_port})
        else:
            rrtest.ensure_user()
            self.agent = agent or rrtest.Agent(
                name=name + "/agent",
                relay="[127.0.0.1]:%d" % relay_port)
            a = self.agent
            self.master_extra = (
                "rapidretry unix - n n - 50 pipe flags=q null_sender= "
                "user=%s argv=%s -c %s -i ${queue_id} -n ${nexthop} "
                "-f ${sender} -- ${recipient}\n"
                % (rrtest.TEST_USER, a.binary, a.conf))
            self.main.update({
                "default_transport": transport
                or "rapidretry:[127.0.0.1]:%d" % relay_port,
                "rapidretry_destination_recipient_limit":
                    str(recipient_limit),
                "rapidretry_time_limit": "120s",
            })
            if rrtest.ASAN:
                self.pass_environment(rrtest.asan_options())
        self.main.update(main or {})

    def submit(self, sender, rcpts, message=None):
        """submit - sendmail -C as root; returns the queue id."""
        if message is None:
            message = rrtest.sample_message(sender, rcpts)
        mark = self.mark()
        p = subprocess.run(["sendmail", "-C", self.etc, "-f", sender, "--"]
                           + list(rcpts), input=message.encode(),
                           capture_output=True)
        if p.returncode != 0:
            rrtest.diag("sendmail: rc=%d %s" % (p.returncode, p.stderr))
            return None
        lines = self.wait_log(r"pickup\[\d+\]: %s: uid=" % QID, since=mark)
        m = re.search(r": (%s): uid=" % QID, lines[0]) if lines else None
        return m.group(1) if m else None

    def queue_ids(self):
        """queue_ids - queue ids that pickup saw, in order."""
        return re.findall(r"pickup\[\d+\]: (%s): uid=" % QID, self.log())

    def statuses(self, qid, since=0):
        """statuses - [(rcpt, dsn, status, text)] Postfix logged for qid."""
        rx = re.compile(r": %s: to=<([^>]*)>,.* dsn=([\d.]+), status=(\w+)"
                        r" ?(.*)$" % re.escape(qid))
        res = []
        for l in self.log_lines(since):
            m = rx.search(l)
            if m:
                res.append(m.groups())
        return res

    def queued_rcpts(self):
        """queued_rcpts - {rcpt: delay_reason} for every queued message."""
        res = {}
        for msg in self.queue_json():
            for r in msg.get("recipients", []):
                res[r["address"].lower()] = r.get("delay_reason", "")
        return res

    def agent_log(self):
        """agent_log - the agent's own log lines."""
        return self.agent.log_lines() if self.agent else []
