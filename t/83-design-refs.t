#!/usr/bin/env python3
# 83-design-refs.t - every "DESIGN §N" (or "DESIGN.md §N") cited in the
# sources, tests, man pages and docs names a section that doc/DESIGN.md
# has ("## N. Title"), and the document's sections are numbered 1, 2, ...
# without gaps, so a citation never points nowhere.
import os
import re
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, diag, done

DIRS = ["agent", "milter", "common", "tools", "t", "man", "fuzz", "bench",
        "doc", "debian", "demo", "etc"]
FILES = ["README.md", "Makefile", "master.cf.example", "main.cf.example"]
CITE = re.compile(r"DESIGN(?:\.md)?\s+((?:§\s*\d+[,\s]*)+)")
NUM = re.compile(r"§\s*(\d+)")

design = rrtest.read_file(os.path.join(TOP, "doc", "DESIGN.md"))
sections = [int(n) for n in re.findall(r"^## (\d+)\. \S", design, re.M)]
ok(len(sections) >= 9, "doc/DESIGN.md has numbered sections (%d)"
   % len(sections))
is_(sections, list(range(1, len(sections) + 1)),
    "its sections are numbered 1..N in order, without gaps")


def sources():
    for d in DIRS:
        for root, dirs, files in os.walk(os.path.join(TOP, d)):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            for f in files:
                if f.endswith((".o", ".so", ".deb", ".pyc")):
                    continue
                yield os.path.join(root, f)
    for f in FILES:
        yield os.path.join(TOP, f)


cites = 0
bad = []
for path in sources():
    if path.endswith("83-design-refs.t"):
        continue
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        continue
    # a citation may be broken across a comment's line end: " * §6"
    flat = re.sub(r"\n\s*(?:\*|#|//)?\s*", " ", text)
    for m in CITE.finditer(flat):
        for n in NUM.findall(m.group(1)):
            cites += 1
            if int(n) not in sections:
                bad.append("%s: DESIGN §%s" % (os.path.relpath(path, TOP), n))
ok(cites >= 50, "the tree cites DESIGN sections (%d citations)" % cites)
for b in bad:
    diag("no such section: " + b)
is_(len(bad), 0, "every DESIGN §N citation names a section of doc/DESIGN.md")

# the stale-name check: a file header naming doc sections must also not
# send the reader to the old path
stale = []
for path in sources():
    if path.endswith("83-design-refs.t"):
        continue
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        continue
    if "shared/DESIGN.md" in text:
        stale.append(os.path.relpath(path, TOP))
is_(stale, [], "no file points at a DESIGN.md outside the tree")
done()
