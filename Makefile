# rapidretry - build, test, install.
#
#   make              build agent/rapidretry-agent and milter/rapidretry-milter
#   make check        install missing Debian packages, build, run `prove -r t`
#   make check-asan   the same suite with -fsanitize=address,undefined (leaks too)
#   make deps         only install the Debian packages (root, Debian 12)
#   make demo         set up, build, show RapidRetry against throw-away Postfix
#   make bench        set up, build, measure (bench/results/*.csv, *.json)
#   make install      PREFIX=/usr/local DESTDIR= (binaries, man pages, unit,
#                     /etc/rapidretry/rapidretry.conf when none exists)
#   make uninstall    remove what install put there (an edited config stays)
#   make install-user the "rapidretry" system user and /var/lib/rapidretry
#   make torture      SEED=1 N=300 J=1: the fault-injection campaign
#   make soak         N=100000: one resident LMTP-mode agent, RSS and fds
#   make torture-lmtp SEED=1 N=300 J=1: the LMTP-mode fault campaign
#   make fuzz         the libFuzzer targets, FUZZ_TIME seconds each

# Order of the libraries: the dynamic loader resolves every symbol of every
# library by searching them in this order, and libcrypto and libsqlite3
# refer to thousands of their own symbols: first, they find them at once
# (about 12% fewer loader instructions per run). The programs do not link
# OpenSSL: the agent loads its TLS module (agent/rapidretry-tls.so, the
# only code linked with TLS_PKGS) when a connection first needs TLS.
PKGS     = sqlite3 glib-2.0 libcares libidn2 hiredis
TLS_PKGS = libcrypto libssl glib-2.0
CC      ?= cc
OPT     ?= -O2 -g
WARN     = -Wall -Wextra -Werror -Wformat=2 -Wno-format-nonliteral \
           -Wmissing-prototypes -Wstrict-prototypes -Wshadow
CFLAGS  += -std=gnu11 $(OPT) $(WARN) -pthread -D_GNU_SOURCE
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
TLS_LIBS   := $(shell pkg-config --libs $(TLS_PKGS) 2>/dev/null)
PKG_CFLAGS += $(shell pkg-config --cflags libssl 2>/dev/null)
# the agent's parts (doc/DESIGN.md §1): every folder is an include folder
AGENT_DIRS = agent agent/core agent/route agent/smtp agent/lmtp agent/store \
             agent/sched \
             agent/admin
CPPFLAGS += -Icommon $(AGENT_DIRS:%=-I%) -Imilter $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lmilter -pthread

# Helpful build: a missing development package is named before any
# compiler error (pkg-config per package, libmilter by its header). Goals
# that install the packages first (check, demo, bench, deps) skip this.
DEV_PKGS = pkg-config:pkg-config glib-2.0:libglib2.0-dev \
           libcares:libc-ares-dev openssl:libssl-dev sqlite3:libsqlite3-dev \
           libidn2:libidn2-dev hiredis:libhiredis-dev
ifneq ($(filter all install,$(or $(MAKECMDGOALS),all)),)
RR_MISSING := $(strip $(shell \
    command -v $(firstword $(CC)) >/dev/null 2>&1 || echo build-essential; \
    for pd in $(DEV_PKGS); do p=$${pd%%:*}; d=$${pd##*:}; \
        if [ $$p = pkg-config ]; then command -v pkg-config >/dev/null || \
            echo $$d; else pkg-config --exists $$p 2>/dev/null || echo $$d; \
        fi; done; \
    printf '\043include <libmilter/mfapi.h>\n' | \
        $(CC) -E - >/dev/null 2>&1 || echo libmilter-dev))
ifneq ($(RR_MISSING),)
$(error missing Debian packages: $(RR_MISSING). Install them with \
  "make deps" (as root; Debian 12) or "apt-get install $(RR_MISSING)")
endif
endif

# Variant: the default build lives in build/default; ASan in build/asan.
VARIANT ?= default
ifeq ($(VARIANT),asan)
OPT      = -O1 -g -fno-omit-frame-pointer
CFLAGS  += -fsanitize=address,undefined,float-cast-overflow \
           -fno-sanitize-recover=undefined,float-cast-overflow
LDFLAGS += -fsanitize=address,undefined,float-cast-overflow
endif
ifeq ($(VARIANT),default)
# as Debian's package builds it (dpkg-buildflags): unchecked results of
# write(2), fchown(2) ... are errors here too, not only in `make deb`
CPPFLAGS += -D_FORTIFY_SOURCE=2
endif
ifeq ($(VARIANT),fuzz)
# gcc's build is the warning gate; clang's own extra warnings stay warnings
WARN    := $(filter-out -Werror,$(WARN))
CC       = clang
OPT      = -O1 -g -fno-omit-frame-pointer
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined \
           -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=fuzzer,address,undefined
endif
B = build/$(VARIANT)

COMMON_SRC = $(wildcard common/*.c)
AGENT_SRC  = $(filter-out agent/main.c agent/smtp/tls-mod.c,\
                          $(wildcard $(AGENT_DIRS:%=%/*.c)))
AGENT_HDR  = $(wildcard $(AGENT_DIRS:%=%/*.h))
MILTER_SRC = $(filter-out milter/main.c,$(wildcard milter/*.c))
UNIT_SRC   = $(wildcard t/unit/*.c)

COMMON_OBJ = $(COMMON_SRC:%.c=$(B)/%.o)
AGENT_OBJ  = $(AGENT_SRC:%.c=$(B)/%.o)
MILTER_OBJ = $(MILTER_SRC:%.c=$(B)/%.o)
UNITS      = $(UNIT_SRC:%.c=$(B)/%)

LIBS_A = $(B)/libagent.a $(B)/libmilter-rr.a $(B)/libcommon.a

PROGS = $(B)/agent/rapidretry-agent
ifneq ($(wildcard milter/main.c),)
PROGS += $(B)/milter/rapidretry-milter
endif
ifneq ($(wildcard tools/log-main.c),)
PROGS += $(B)/agent/rapidretry-log
endif
# the agent's TLS module: found beside the agent's executable
TLS_MOD = $(B)/agent/rapidretry-tls.so
TLS_MOD_OBJ = $(B)/agent/smtp/tls-mod.pic.o $(B)/common/log.pic.o

# bench/sched_bench.c: part (i) of `make bench`, the cost of scheduling
SCHED_BENCH = $(B)/bench/sched-bench

all: $(PROGS) $(TLS_MOD) $(UNITS) $(SCHED_BENCH)
ifeq ($(VARIANT),default)
	@for p in $(PROGS); do ln -sf ../$$p $$(echo $$p | sed 's|^$(B)/||'); done
endif

$(B)/%.o: %.c $(wildcard common/*.h milter/*.h t/unit/*.h tools/*.h) \
          $(AGENT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# the module's objects: position-independent, nothing exported but the
# module's one symbol (tls-mod.h)
$(B)/%.pic.o: %.c $(wildcard common/*.h) $(AGENT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

$(B)/libcommon.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(B)/libagent.a: $(AGENT_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(B)/libmilter-rr.a: $(MILTER_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/agent/rapidretry-agent: $(B)/agent/main.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
$(SCHED_BENCH): $(B)/bench/sched_bench.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
$(B)/agent/rapidretry-log: $(B)/tools/log-main.o $(B)/tools/log-stats.o \
                           $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS_A) $(LDLIBS)
$(B)/milter/rapidretry-milter: $(B)/milter/main.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
$(TLS_MOD): $(TLS_MOD_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-z,defs -o $@ $^ $(TLS_LIBS) -pthread
$(B)/t/unit/%: $(B)/t/unit/%.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
# the TLS unit checks certificates itself: the module's code linked in
$(B)/t/unit/tls: $(B)/t/unit/tls.o $(B)/agent/smtp/tls-mod.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(B)/agent/smtp/tls-mod.o $(LIBS_A) $(TLS_LIBS) \
	    $(LDLIBS)

# Tests find the build through RR_BUILD (absolute path).
check: deps
	$(MAKE) all
	RR_BUILD=$(CURDIR)/$(B) prove -r t

check-asan: deps
	$(MAKE) VARIANT=asan all
	RR_BUILD=$(CURDIR)/build/asan RR_ASAN=1 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 prove -r t

deps:
	@sh t/lib/install-deps

format:
	clang-format -i $(wildcard common/*.[ch] $(AGENT_DIRS:%=%/*.[ch]) tools/*.c \
	    milter/*.[ch] t/unit/*.c)

clean:
	rm -rf build agent/rapidretry-agent agent/rapidretry-log milter/rapidretry-milter

# --- install ------------------------------------------------------------------
PREFIX     ?= /usr/local
LIBEXECDIR ?= $(PREFIX)/libexec/rapidretry
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/rapidretry
UNITDIR    ?= $(PREFIX)/lib/systemd/system
CONFDIR    ?= /etc/rapidretry
STATEDIR   ?= /var/lib/rapidretry
RR_USER    ?= rapidretry
INSTALL    ?= install
MAN1 = $(wildcard man/*.1)
MAN5 = $(wildcard man/*.5)
MAN8 = $(wildcard man/*.8)
DOCS = README.md LICENSE master.cf.example main.cf.example redis.conf.example
UNIT = milter/rapidretry-milter.service agent/lmtp/rapidretry-lmtp.service
# Installed files hold the install paths, not /usr/local.
FIXPATHS = sed -e 's|/usr/local/libexec/rapidretry|$(LIBEXECDIR)|g' \
	       -e 's|/usr/local/sbin|$(SBINDIR)|g' \
	       -e 's|/usr/local/share/doc/rapidretry|$(DOCDIR)|g'

install: all
	$(INSTALL) -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(SBINDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(CONFDIR)
	$(INSTALL) -m 755 $(B)/agent/rapidretry-agent $(DESTDIR)$(LIBEXECDIR)/
	$(INSTALL) -m 644 $(TLS_MOD) $(DESTDIR)$(LIBEXECDIR)/
	for p in $(B)/milter/rapidretry-milter $(B)/agent/rapidretry-log; do \
	    if [ -x $$p ]; then $(INSTALL) -m 755 $$p $(DESTDIR)$(SBINDIR)/; fi; \
	done
	$(INSTALL) -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	for f in $(DOCS); do \
	    $(FIXPATHS) $$f > $(DESTDIR)$(DOCDIR)/$$f && \
	    chmod 644 $(DESTDIR)$(DOCDIR)/$$f; done
	for u in $(UNIT); do \
	    $(FIXPATHS) $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} && \
	    chmod 644 $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	@# never overwrite a configuration: the new example goes beside it
	if [ -e $(DESTDIR)$(CONFDIR)/rapidretry.conf ]; then \
	    $(INSTALL) -m 644 etc/rapidretry.conf.example \
	        $(DESTDIR)$(CONFDIR)/rapidretry.conf.example; \
	    echo "kept $(DESTDIR)$(CONFDIR)/rapidretry.conf;" \
	        "the new example is rapidretry.conf.example"; \
	else \
	    $(INSTALL) -m 644 etc/rapidretry.conf.example \
	        $(DESTDIR)$(CONFDIR)/rapidretry.conf; \
	fi
	@echo "installed. Next: make install-user, then master.cf/main.cf" \
	    "as in $(DOCDIR)/master.cf.example and main.cf.example"

uninstall:
	rm -f $(DESTDIR)$(LIBEXECDIR)/rapidretry-agent \
	    $(DESTDIR)$(LIBEXECDIR)/rapidretry-tls.so \
	    $(DESTDIR)$(SBINDIR)/rapidretry-milter \
	    $(DESTDIR)$(SBINDIR)/rapidretry-log \
	    $(DESTDIR)$(UNITDIR)/rapidretry-milter.service \
	    $(DESTDIR)$(UNITDIR)/rapidretry-lmtp.service \
	    $(DESTDIR)$(CONFDIR)/rapidretry.conf.example
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
	    $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(MAN5))) \
	    $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN8))) \
	    $(addprefix $(DESTDIR)$(DOCDIR)/,$(DOCS))
	@# the configuration goes only when nobody changed it
	if cmp -s etc/rapidretry.conf.example \
	    $(DESTDIR)$(CONFDIR)/rapidretry.conf; then \
	    rm -f $(DESTDIR)$(CONFDIR)/rapidretry.conf; \
	elif [ -e $(DESTDIR)$(CONFDIR)/rapidretry.conf ]; then \
	    echo "kept the edited $(DESTDIR)$(CONFDIR)/rapidretry.conf"; fi
	-rmdir $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(DOCDIR) \
	    $(DESTDIR)$(CONFDIR) 2>/dev/null

install-user:
	getent passwd $(RR_USER) >/dev/null || \
	    useradd --system --user-group --no-create-home \
	        --home-dir $(STATEDIR) --shell /usr/sbin/nologin \
	        --comment "rapidretry delivery agent" $(RR_USER)
	$(INSTALL) -d -o $(RR_USER) -g $(RR_USER) -m 750 $(DESTDIR)$(STATEDIR)

# --- Debian package: built in a copy (build/pkg); the .deb goes to DEB_OUT --
DEB_OUT ?= .
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
	    { echo "make deb needs dpkg-dev and debhelper:" \
	        "apt-get install dpkg-dev debhelper"; exit 1; }
	rm -rf build/pkg && mkdir -p build/pkg/rapidretry
	tar -cf - --exclude=./build --exclude=./.git --exclude='./rapidretry_*' \
	    --exclude=./agent/rapidretry-agent --exclude=./agent/rapidretry-log \
	    --exclude=./milter/rapidretry-milter . | \
	    tar -C build/pkg/rapidretry -xf -
	cd build/pkg/rapidretry && dpkg-buildpackage -b -us -uc
	mv build/pkg/rapidretry_*.deb $(DEB_OUT)/
	@ls $(DEB_OUT)/rapidretry_*.deb

# --- demo and bench: all set-up first, as `make check` does ----------------
demo: deps
	$(MAKE) all
	RR_BUILD=$(CURDIR)/$(B) python3 demo/demo.py

bench: deps
	$(MAKE) all
	RR_BUILD=$(CURDIR)/$(B) python3 bench/bench.py

# --- fuzzing (fuzz/*.c, clang's libFuzzer) ----------------------------------
FUZZERS   = $(patsubst fuzz/%.c,build/fuzz/fuzz/%,$(wildcard fuzz/*.c))
FUZZ_TIME ?= 5
build/fuzz/fuzz/%: build/fuzz/fuzz/%.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
fuzzers: $(FUZZERS)
# each target FUZZ_TIME seconds from its seed corpus (fuzz/corpus/NAME);
# new inputs go to build/fuzz/corpus/NAME, crashes to build/fuzz/crash-*
fuzz:
	$(MAKE) VARIANT=fuzz fuzzers
	@for f in $(FUZZERS); do n=$$(basename $$f); \
	    mkdir -p build/fuzz/corpus/$$n; \
	    echo "fuzz $$n ($(FUZZ_TIME)s)"; \
	    $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash-$$n- \
	        build/fuzz/corpus/$$n fuzz/corpus/$$n \
	        > build/fuzz/$$n.log 2>&1; rc=$$?; \
	    grep -E 'number_of_executed_units|ERROR|SUMMARY|property' \
	        build/fuzz/$$n.log; \
	    test $$rc = 0 || { echo "fuzz $$n: finding, see build/fuzz/$$n.log"; \
	        exit 1; }; \
	done

# --- fault injection (t/lib/torture.py) ------------------------------------
SEED ?= 1
N    ?= 300
J    ?= 1
# one resident LMTP-mode agent, N messages over one kept session: the RSS
# and descriptor curve every 10,000 (t/lib/soak.py; make check runs 6,000)
N_SOAK = $(if $(filter soak,$(MAKECMDGOALS)),$(or $(N),100000),100000)
soak: all
	RR_BUILD=$(CURDIR)/$(B) python3 t/lib/soak.py -n $(N_SOAK) --every 10000

# the LMTP-mode fault campaign (t/lib/torture_lmtp.py; make check: 300)
torture-lmtp: all
	RR_BUILD=$(CURDIR)/$(B) python3 t/lib/torture_lmtp.py --seed $(SEED) \
	    -n $(N) -j $(J)

torture: all
	RR_BUILD=$(CURDIR)/$(B) RR_ASAN=$(if $(filter asan,$(VARIANT)),1,0) \
	    python3 t/lib/torture.py --seed $(SEED) -n $(N) -j $(J)

.PHONY: all check check-asan deps format clean install uninstall soak \
        torture-lmtp \
	install-user demo bench torture fuzz fuzzers deb
.SECONDARY:
