# afcgi build. `make` builds ./afcgi and ./afcgi-bench; `make test` installs
# what is missing (Debian packages), then runs the spec suite on the normal
# build and on the ASan+UBSan build.

CC       ?= cc
PKGS      = luajit libevent
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O2
CSTD      = -std=c99 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   += $(OPT) -g $(CSTD) $(WARN) $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lm

BUILD    ?= build/release
SERVER_SRCS = src/fcgi.c src/log.c src/buf.c src/conn.c src/req.c src/vm.c src/api.c \
              src/server.c src/main.c
BENCH_SRCS  = src/fcgi.c src/bench.c
SERVER_OBJS = $(SERVER_SRCS:src/%.c=$(BUILD)/%.o)
BENCH_OBJS  = $(BENCH_SRCS:src/%.c=$(BUILD)/%.o)

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
LUADIR   ?= $(PREFIX)/share/lua/5.1

BUSTED   ?= busted
BUSTED_FLAGS ?=

.PHONY: all clean test check spec asan spec-asan deps install demo

all: afcgi afcgi-bench

afcgi: $(SERVER_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

afcgi-bench: $(BENCH_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/%.o: src/%.c src/*.h | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD):
	mkdir -p $@

# ASan + UBSan build of the server (./afcgi-asan), same sources, own object directory.
asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" afcgi-asan
afcgi-asan: $(SERVER_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# Debian packages the build, the tests and the demo need.
DEB_PKGS = build-essential pkg-config luajit2 libluajit2-5.1-dev libevent-dev lua-cjson \
           lua-busted lua-socket lua-posix luarocks nginx-light
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

spec: all
	AFCGI_BIN=$(CURDIR)/afcgi $(BUSTED) $(BUSTED_FLAGS)

spec-asan: asan
	AFCGI_BIN=$(CURDIR)/afcgi-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(BUSTED) $(BUSTED_FLAGS)

test: deps
	$(MAKE) spec
	$(MAKE) spec-asan

install: afcgi
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/afcgi
	install -m 755 afcgi $(DESTDIR)$(BINDIR)/afcgi
	install -m 644 lua/afcgi/*.lua $(DESTDIR)$(LUADIR)/afcgi/

clean:
	rm -rf build afcgi afcgi-asan afcgi-bench
