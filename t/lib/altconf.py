"""altconf - let an unprivileged agent submit mail (DSNs) to a test
Postfix instance: postdrop is setgid and trusts only the config
directories listed in alternate_config_directories of the default
/etc/postfix/main.cf (TESTING.md, "Submitting mail from the agent").

allow(etc_dir) adds the directory under a lock (several test runs may
share the machine) and removes it again at exit; other lines of the file
are kept as they are.
"""

import fcntl
import os

import rrtest

MAIN = "/etc/postfix/main.cf"
LOCK = "/etc/postfix/.rrtest-altconf.lock"
KEY = "alternate_config_directories"


def _edit(fn):
    """_edit - rewrite MAIN's alternate_config_directories under LOCK."""
    os.makedirs(os.path.dirname(MAIN), exist_ok=True)
    with open(LOCK, "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        lines = rrtest.read_file(MAIN).splitlines()
        dirs, rest = [], []
        for l in lines:
            if l.split("=", 1)[0].strip() == KEY:
                dirs += [d for d in l.split("=", 1)[1].replace(",", " ")
                         .split() if d]
            else:
                rest.append(l)
        dirs = fn(dirs)
        if dirs:
            rest.append("%s = %s" % (KEY, ", ".join(dirs)))
        if not [l for l in rest if l.strip()]:
            # nothing left: no file, as before (without it, postdrop
            # refuses every unprivileged submission)
            if os.path.exists(MAIN):
                os.unlink(MAIN)
            return
        tmp = MAIN + ".rrtest.%d" % os.getpid()
        rrtest.write_file(tmp, "\n".join(rest) + "\n")
        os.rename(tmp, MAIN)


def allow(etc_dir):
    """allow - trust ETC_DIR for postdrop until this test exits."""
    _edit(lambda d: d + [etc_dir] if etc_dir not in d else d)
    rrtest.at_cleanup(lambda: _edit(lambda d: [x for x in d
                                               if x != etc_dir]))
