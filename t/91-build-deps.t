#!/usr/bin/env python3
# 91-build-deps.t - a helpful build: `make` on a machine without the
# development packages names the missing ones and `make deps` before any
# compiler error. Emulated: pkg-config finds no .pc file
# (PKG_CONFIG_LIBDIR), the compiler no system header (-nostdinc), a
# compiler that is not there at all; and `make deps` installs exactly
# the packages named. And what the programs link: OpenSSL only in the
# agent's TLS module, which exports one symbol.
import os
import re
import subprocess
import sys
sys.dont_write_bytecode = True

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import rrtest
from rrtest import ok, is_, like, diag, done

DEV = ["libglib2.0-dev", "libc-ares-dev", "libssl-dev", "libsqlite3-dev",
       "libidn2-dev", "libhiredis-dev", "libmilter-dev"]


def make(env_extra, *args):
    env = dict(os.environ, **env_extra)
    return subprocess.run(["make", "-C", TOP, "VARIANT=depcheck"]
                          + list(args), env=env, capture_output=True,
                          text=True, timeout=120)


def named(text):
    m = re.search(r"missing Debian packages: (.*?)\. Install", text)
    return m.group(1).split() if m else []


# nothing found: every -dev package is named, nothing compiled
p = make({"PKG_CONFIG_LIBDIR": "/nonexistent"}, "CC=cc -nostdinc", "all")
ok(p.returncode != 0, "make fails without the development packages")
is_(named(p.stderr), DEV, "it names every missing -dev package, in order")
like(p.stderr, r'"make deps".*"apt-get install %s"' % " ".join(DEV),
     "and says how to get them")
ok(not re.search(r"error:|No such file", p.stderr + p.stdout)
   and not os.path.exists(os.path.join(TOP, "build", "depcheck")),
   "before any compiler error: nothing was compiled")

# one missing: only that one
p = make({}, "CC=cc -nostdinc", "all")
is_(named(p.stderr), ["libmilter-dev"], "only libmilter-dev (its header)")
p = make({"PKG_CONFIG_LIBDIR": "/nonexistent"}, "install",
         "DESTDIR=/nonexistent")
is_(named(p.stderr), DEV[:6], "make install checks too")
p = make({}, "CC=/nonexistent/cc", "all")
like(p.stderr, r"missing Debian packages: build-essential\b",
     "no compiler: build-essential")

# goals that install the packages first are not stopped by the check
p = make({"PKG_CONFIG_LIBDIR": "/nonexistent"}, "-n", "deps")
ok(p.returncode == 0 and "t/lib/install-deps" in p.stdout,
   "make deps runs t/lib/install-deps even when packages are missing")
p = make({"PKG_CONFIG_LIBDIR": "/nonexistent"}, "-n", "check")
ok("t/lib/install-deps" in p.stdout,
   "make check installs the packages first (the check waits for its "
   "own make all)")

# make deps would install each package the check can name
deps = rrtest.read_file(os.path.join(TOP, "t", "lib", "install-deps"))
pkgs = re.search(r'PKGS="([^"]*)"', deps).group(1).split()
is_([d for d in DEV + ["build-essential", "pkg-config"] if d not in pkgs],
    [], "t/lib/install-deps installs every package the check names")

# with everything here the check is silent
p = make({}, "-n", "all")
ok(p.returncode == 0 and "missing" not in p.stderr,
   "with the packages installed the check says nothing")


def needed(path):
    """needed - the NEEDED libraries of the ELF file PATH (readelf -d)."""
    out = subprocess.run(["readelf", "-d", path], capture_output=True,
                         text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


# a run that meets no STARTTLS server loads no OpenSSL: the programs do not
# link it; the module does, and exports only its interface
B = os.environ.get("RR_BUILD")
if B:
    ssl = re.compile(r"^lib(ssl|crypto)\.so")
    for prog in ("agent/rapidretry-agent", "agent/rapidretry-log",
                 "milter/rapidretry-milter"):
        libs = needed(os.path.join(B, prog))
        ok(libs and not [l for l in libs if ssl.match(l)],
           "%s: no libssl/libcrypto among NEEDED %s" % (prog, libs))
    mod = os.path.join(B, "agent", "rapidretry-tls.so")
    is_(sorted(l for l in needed(mod) if ssl.match(l)),
        ["libcrypto.so.3", "libssl.so.3"], "the TLS module links OpenSSL")
    syms = subprocess.run(["nm", "-D", "--defined-only", mod],
                          capture_output=True, text=True, check=True).stdout
    # (an ASan build adds its own ODR indicators, __odr_asan.NAME)
    is_([l.split()[-1] for l in syms.splitlines()
         if not l.split()[-1].startswith("__odr_asan")],
        ["rapidretry_tls_module"], "the module exports one symbol")
done()
