#!/usr/bin/env python3
# 81-docs.t - the documentation keeps up with the code: every config key of
# the schema tables (agent/conf.c, milter/milterconf.c) is an entry of
# rapidretry.conf(5) with its default; every option of each program is in
# its man page; groff formats the man pages without a warning; and
# `make install DESTDIR=...` followed by `make uninstall` leaves no file.
import os
import re
import subprocess
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, diag, done


def read(rel):
    return rrtest.read_file(os.path.join(TOP, rel))


def spec_table(rel, table):
    """spec_table - [(section, key, default)] from a ConfSpec array in a C
    file; default None when it is NULL or a macro."""
    src = read(rel)
    m = re.search(r"ConfSpec\s+%s\[\]\s*=\s*\{(.*?)\n\};" % table, src, re.S)
    if not m:
        return None
    rows = []
    for e in re.finditer(r"\{\s*\"([^\"]+)\",\s*\"([^\"]+)\",\s*CONF_\w+,"
                         r"\s*(\"((?:[^\"\\]|\\.)*)\"|\w+)", m.group(1)):
        rows.append((e.group(1), e.group(2),
                     e.group(4) if e.group(3).startswith('"') else None))
    return rows


def man_plain(text):
    """man_plain - roff escapes that matter here made plain."""
    return (text.replace("\\-", "-").replace("\\(dq", '"')
            .replace("\\(lq", '"').replace("\\(rq", '"')
            .replace("\\fP", "").replace("\\fI", "").replace("\\fB", "")
            .replace("\\fR", ""))


def man_sections(text):
    """man_sections - {"agent": [entry lines]} from the .SS "[name]"
    subsections: the line after each .TP."""
    res = {}
    cur = None
    lines = man_plain(text).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'\.SS "?\[(\w+)\]"?', line)
        if m:
            cur = res.setdefault(m.group(1), [])
        elif line.startswith(".SH"):
            cur = None
        elif line == ".TP" and cur is not None and i + 1 < len(lines):
            cur.append(lines[i + 1])
    return res


# --- config keys ----------------------------------------------------------
conf5 = read("man/rapidretry.conf.5")
ok(conf5, "man/rapidretry.conf.5 exists")
sections = man_sections(conf5)
for rel, table in (("agent/conf.c", "agent_spec"),
                   ("milter/milterconf.c", "milter_spec")):
    rows = spec_table(rel, table)
    if not ok(rows, "%s: the %s table parsed (%d keys)"
              % (rel, table, len(rows or []))):
        continue
    missing, nodefault = [], []
    for sec, key, deflt in rows:
        entries = sections.get(sec, [])
        rx = re.compile(r'^\.B "?%s =( (.*?))?"?\s*$' % re.escape(key))
        found = [rx.match(e) for e in entries if rx.match(e)]
        if not found:
            missing.append("[%s] %s" % (sec, key))
        elif deflt and (found[0].group(2) or "") != deflt:
            nodefault.append("[%s] %s = %s (man: %r)"
                             % (sec, key, deflt, found[0].group(2)))
    is_(missing, [], "%s: every key has an entry in rapidretry.conf(5)"
        % rel)
    is_(nodefault, [], "%s: every entry shows the code's default" % rel)

# --- options --------------------------------------------------------------


def getopt_opts(rel):
    """getopt_opts - the option letters of the getopt() string in REL."""
    m = re.search(r'getopt\([^"]*"\+?([^"]*)"', read(rel))
    return ["-" + c for c in (m.group(1) if m else "") if c != ":"]


def goption_opts(rel):
    """goption_opts - --long and -s options of a GOptionEntry table."""
    res = []
    for m in re.finditer(r'\{"([\w-]+)",\s*(\'(.)\'|0),', read(rel)):
        res.append("--" + m.group(1))
        if m.group(3):
            res.append("-" + m.group(3))
    return res


def man_has_option(text, opt):
    """man_has_option - OPT in a font-change line (.B, .BR, .BI, ...)."""
    rx = re.compile(r"(^|[\s\"\[])%s($|[\s=\"\],])" % re.escape(opt))
    return any(rx.search(l) for l in man_plain(text).splitlines()
               if re.match(r"\.(B|BR|BI|RB|TP|IP)\b", l))


progs = [("agent/main.c", getopt_opts, "man/rapidretry-agent.8"),
         ("milter/main.c", getopt_opts, "man/rapidretry-milter.8"),
         ("tools/log-main.c", goption_opts, "man/rapidretry-log.1")]
for rel, fn, page in progs:
    if not os.path.exists(os.path.join(TOP, rel)):
        rrtest.skip("%s not in this tree" % rel, 2)
        continue
    opts = fn(rel)
    ok(opts, "%s: options found: %s" % (rel, " ".join(opts)))
    text = read(page)
    is_([o for o in opts if not man_has_option(text, o)], [],
        "%s documents every option of %s" % (page, rel))

# --- groff ----------------------------------------------------------------
pages = sorted(os.path.join(TOP, "man", f)
               for f in os.listdir(os.path.join(TOP, "man")))
for p in pages:
    r = subprocess.run(["man", "--warnings", "-l", p], capture_output=True,
                       text=True, env=dict(os.environ, MANWIDTH="80",
                                           MANPAGER="cat", PAGER="cat"))
    ok(r.returncode == 0 and r.stdout.strip(), "%s formats"
       % os.path.basename(p))
    is_(r.stderr.strip(), "", "%s: no groff warnings" % os.path.basename(p))

# --- install / uninstall ----------------------------------------------------
build = os.environ.get("RR_BUILD")
if build and os.access(os.path.join(build, "agent", "rapidretry-agent"),
                       os.X_OK):
    dest = rrtest.subdir("destdir")
    var = os.path.basename(build)
    mk = ["make", "-s", "-C", TOP, "VARIANT=" + var, "DESTDIR=" + dest]
    r = subprocess.run(mk + ["install"], capture_output=True, text=True)
    ok(r.returncode == 0, "make install DESTDIR=tmp")
    if r.returncode:
        diag(r.stdout + r.stderr)
    files = sorted(os.path.relpath(os.path.join(d, f), dest)
                   for d, _, fs in os.walk(dest) for f in fs)
    want = ["etc/rapidretry/rapidretry.conf",
            "usr/local/libexec/rapidretry/rapidretry-agent",
            "usr/local/lib/systemd/system/rapidretry-milter.service",
            "usr/local/share/man/man5/rapidretry.conf.5",
            "usr/local/share/man/man8/rapidretry-agent.8",
            "usr/local/share/doc/rapidretry/master.cf.example"]
    is_([w for w in want if w not in files], [], "the installed files")
    # a second install keeps the (edited) configuration
    conf = os.path.join(dest, "etc/rapidretry/rapidretry.conf")
    with open(conf, "a") as f:
        f.write("# edited\n")
    subprocess.run(mk + ["install"], capture_output=True)
    ok(rrtest.read_file(conf).endswith("# edited\n")
       and os.path.exists(conf + ".example"),
       "install again: the edited config is kept, the example beside it")
    os.remove(conf)
    r = subprocess.run(mk + ["uninstall"], capture_output=True, text=True)
    ok(r.returncode == 0, "make uninstall DESTDIR=tmp")
    left = sorted(os.path.relpath(os.path.join(d, f), dest)
                  for d, _, fs in os.walk(dest) for f in fs)
    is_(left, [], "nothing left after uninstall")
else:
    rrtest.skip("RR_BUILD not set or not built", 5)
done()
