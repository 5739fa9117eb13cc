# rapidretry - build, test, install.
#
#   make              build agent/rapidretry-agent and milter/rapidretry-milter
#   make check        install missing Debian packages, build, run `prove -r t`
#   make check-asan   the same suite with -fsanitize=address,undefined
#   make deps         only install the Debian packages (root, Debian 12)

PKGS     = glib-2.0 libcares openssl sqlite3
CC      ?= cc
OPT     ?= -O2 -g
WARN     = -Wall -Wextra -Werror -Wformat=2 -Wno-format-nonliteral \
           -Wmissing-prototypes -Wstrict-prototypes -Wshadow
CFLAGS  += -std=gnu11 $(OPT) $(WARN) -pthread -D_GNU_SOURCE
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CPPFLAGS += -Icommon -Iagent -Imilter $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lmilter -pthread

# Variant: the default build lives in build/default; ASan in build/asan.
VARIANT ?= default
ifeq ($(VARIANT),asan)
OPT      = -O1 -g -fno-omit-frame-pointer
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
B = build/$(VARIANT)

COMMON_SRC = $(wildcard common/*.c)
AGENT_SRC  = $(filter-out agent/main.c agent/log-main.c,$(wildcard agent/*.c))
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
ifneq ($(wildcard agent/log-main.c),)
PROGS += $(B)/agent/rapidretry-log
endif

all: $(PROGS) $(UNITS)
ifeq ($(VARIANT),default)
	@for p in $(PROGS); do ln -sf ../$$p $$(echo $$p | sed 's|^$(B)/||'); done
endif

$(B)/%.o: %.c $(wildcard common/*.h agent/*.h milter/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

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
$(B)/agent/rapidretry-log: $(B)/agent/log-main.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
$(B)/milter/rapidretry-milter: $(B)/milter/main.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)
$(B)/t/unit/%: $(B)/t/unit/%.o $(LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBS_A) $(LDLIBS)

# Tests find the build through RR_BUILD (absolute path).
check: deps
	$(MAKE) all
	RR_BUILD=$(CURDIR)/$(B) prove -r t

check-asan: deps
	$(MAKE) VARIANT=asan all
	RR_BUILD=$(CURDIR)/build/asan RR_ASAN=1 \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 prove -r t

deps:
	@sh t/lib/install-deps

format:
	clang-format -i $(wildcard common/*.[ch] agent/*.[ch] milter/*.[ch] t/unit/*.c)

clean:
	rm -rf build agent/rapidretry-agent agent/rapidretry-log milter/rapidretry-milter

.PHONY: all check check-asan deps format clean
.SECONDARY:
