# afcgi build. `make` builds ./afcgi and ./afcgi-bench; `make test` installs
# what is missing (Debian packages), then runs the spec suite on the normal
# build and on the ASan+UBSan build.

CC       ?= cc
PKGS      = luajit libevent openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null || echo -I/usr/include/luajit-2.1)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lluajit-5.1 -levent -lssl -lcrypto)

OPT      ?= -O2
CSTD      = -std=c99 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   += $(OPT) -g $(CSTD) $(WARN) $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lm -pthread
# The server's own: ngx.re is PCRE2's; the digests are libcrypto's, which is
# linked even if unused so that lua-resty-string's ffi.C finds its symbols,
# as it does nginx's two functions the executable exports (api_resty.c).
NGX_LIBS  = -lpcre2-8 -Wl,--push-state,--no-as-needed -lcrypto -Wl,--pop-state \
            -Wl,--export-dynamic-symbol=ngx_hex_dump -Wl,--export-dynamic-symbol=ngx_atoi

BUILD    ?= build/release

# Layers of the server, bottom to top; a file calls down, never up. Where a
# lower layer must tell a higher one something, it calls a function pointer
# the higher one gave it (a wait's ops record, a task's "ended" callback).
#   1  common/fcgi common/buf log service metrics   pure helpers and the codec; the service
#      params                       manager; the counters each layer adds to; a
#                                   request's params packed
#   2  vm watchdog clock             one LuaJIT state per code generation; time
#   3  task                          run, park, wake, release one coroutine
#   4  timer sema sock pool tls body things a task can wait on (each has its wait ops); a body's store
#   5  req thread <-> conn           a request's life and its connection (the one cluster)
#   6  access stats health slowlog   observers of a request (a flat record in); --ping-path
#   7  api api_sock api_task api_re api_codec api_resty   what handlers call
#   8  server listen master options privs main
# src/common/ is shared by the server, the load tool (src/bench/) and the
# fuzz targets (fuzz/); each program's objects depend on its own headers and
# the common ones only. docs/ARCHITECTURE.md draws the same picture.
COMMON_SRCS = src/common/fcgi.c src/common/buf.c
SERVER_CORE = $(COMMON_SRCS) \
              $(addprefix src/server/,log.c service.c metrics.c clock.c vm.c watchdog.c task.c timer.c sema.c sock.c pool.c tls.c body.c \
                  params.c req.c thread.c conn.c access.c stats.c health.c slowlog.c api.c api_sock.c api_task.c \
                  api_re.c api_codec.c api_resty.c \
                  shdict.c api_shdict.c server.c listen.c)
SERVER_SRCS = $(SERVER_CORE) $(addprefix src/server/,options.c privs.c master.c main.c)
BENCH_SRCS  = src/common/fcgi.c $(wildcard src/bench/*.c)
SERVER_OBJS = $(SERVER_SRCS:src/%.c=$(BUILD)/%.o)
BENCH_OBJS  = $(BENCH_SRCS:src/%.c=$(BUILD)/%.o)
CFLAGS   += -Isrc/common

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
LUADIR   ?= $(PREFIX)/share/lua/5.1

BUSTED   ?= busted
BUSTED_FLAGS ?=

.PHONY: bench bench-quick lint all clean test check spec spec-unit asan spec-asan spec-valgrind deps install demo fuzz fuzz-build fuzz-replay fuzz-save

all: afcgi afcgi-bench

afcgi: $(SERVER_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) $(NGX_LIBS)

afcgi-bench: $(BENCH_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/common/%.o: src/common/%.c src/common/*.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/server/%.o: src/server/%.c src/server/*.h src/common/*.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/bench/%.o: src/bench/%.c src/bench/*.h src/common/*.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD):
	mkdir -p $@

# ASan + UBSan build of the server (./afcgi-asan), same sources, own object directory.
asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" afcgi-asan
afcgi-asan: $(SERVER_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS) $(NGX_LIBS)

# Debian packages the build, the tests and the demo need.
# Installing them must not start nginx as a system service: a policy-rc.d
# that answers 101 keeps the packages' scripts from starting anything.
DEB_PKGS = build-essential pkg-config luajit2 libluajit2-5.1-dev libevent-dev lua-cjson \
           lua-busted lua-socket lua-posix lua-check luarocks nginx haproxy redis-server lua-nginx-redis dnsmasq-base \
           apache2 lighttpd caddy h2o iproute2 clang libclang-rt-14-dev valgrind \
           libssl-dev openssl libpcre2-dev lua-nginx-string lua-nginx-dns lua-luaossl \
           lua-nginx-redis-connector lua-nginx-memcached lua-nginx-websocket lua-nginx-cookie \
           lua-resty-lrucache memcached libnginx-mod-http-lua logrotate prometheus
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    rc=/usr/sbin/policy-rc.d; added=; \
	    if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$rc >/dev/null && \
	        $$SUDO chmod 755 $$rc && added=1; fi; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	        $$missing; status=$$?; \
	    [ -z "$$added" ] || $$SUDO rm -f $$rc; \
	    exit $$status; \
	fi

# Runs busted and ends with one plain "spec: N passed, N failed" line.
SHELL := /bin/bash
RUN_SPECS = set -o pipefail; $(BUSTED) $(BUSTED_FLAGS) 2>&1 | tee build/spec.out; rc=$$?; \
	awk '/successes \/ .* failures/ { print "spec: " $$1 " passed, " $$4 + $$7 " failed" }' \
	    build/spec.out; exit $$rc

spec: all | $(BUILD)
	@echo "== specs on ./afcgi"
	@export AFCGI_BIN=$(CURDIR)/afcgi; $(RUN_SPECS)

# The unit specs alone (spec/unit/: pure Lua modules, no binary).
spec-unit: BUSTED_FLAGS += --run unit
spec-unit: | $(BUILD)
	@echo "== unit specs"
	@$(RUN_SPECS)

spec-asan: asan | $(BUILD)
	@echo "== specs on ./afcgi-asan (AddressSanitizer + UBSan)"
	@export AFCGI_BIN=$(CURDIR)/afcgi-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; $(RUN_SPECS)

# The whole suite, as CI runs it: specs on both builds, every kept fuzz input
# replayed, then a short fuzzing pass of each target.
test: deps
	$(MAKE) lint
	$(MAKE) spec
	$(MAKE) spec-asan
	$(MAKE) spec-valgrind
	$(MAKE) fuzz-replay
	$(MAKE) fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)

# Benchmarks against php-fpm, Go, libfcgi C, WSAPI and nginx+Lua (installs
# them; minutes; never in CI). See BENCHMARKS.md.
bench: afcgi afcgi-bench
	bench/run $(BENCH_FLAGS)
bench-quick: afcgi afcgi-bench
	bench/run --quick $(BENCH_FLAGS)

# Lua style: no globals, no unused values (see .luacheckrc).
lint:
	luacheck --no-color -q lua spec examples bench/lib

# The quick start: the examples behind a real nginx on http://127.0.0.1:8080/.
demo: deps
	$(MAKE) afcgi
	examples/demo.sh

install: afcgi
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/afcgi
	install -m 755 afcgi $(DESTDIR)$(BINDIR)/afcgi
	install -m 644 lua/afcgi/*.lua $(DESTDIR)$(LUADIR)/afcgi/

clean:
	rm -rf build afcgi afcgi-asan afcgi-bench

# ---- fuzzing (libFuzzer, clang) ------------------------------------------
# make fuzz: each target runs FUZZ_SECONDS (default 60) from its corpus in
# fuzz/corpus/<target>/; new inputs go to build/fuzz/corpus-<target>/.
# make fuzz-replay: runs every kept input once (the crash regression check).
# make fuzz-save: merges the new inputs into the kept corpus.
FUZZ_SECONDS ?= 60
CI_FUZZ_SECONDS ?= 15
FUZZ_CC      ?= clang
FUZZ_TARGETS  = record nv conn shdict
FUZZ_FLAGS    = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                $(CSTD) -Wall -Wextra -Werror $(PKG_CFLAGS) \
                -DFUZZ_APP='"$(CURDIR)/spec/fixtures/fuzz_app.lua"' -DFUZZ_LUA_DIR='"$(CURDIR)/lua"'
FUZZ_CORE     = $(SERVER_CORE)
FUZZ_INC      = -Isrc/common -Isrc/server

build/fuzz/record: fuzz/record.c src/common/fcgi.c src/common/fcgi.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_INC) -o $@ fuzz/record.c src/common/fcgi.c
build/fuzz/nv: fuzz/nv.c src/common/fcgi.c src/common/fcgi.h src/server/params.c src/server/params.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_INC) -o $@ fuzz/nv.c src/common/fcgi.c src/server/params.c
build/fuzz/conn: fuzz/conn.c $(FUZZ_CORE) src/server/*.h src/common/*.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_INC) -o $@ fuzz/conn.c $(FUZZ_CORE) $(PKG_LIBS) -lm -pthread \
	    $(NGX_LIBS)

build/fuzz/shdict: fuzz/shdict.c src/server/shdict.c src/server/log.c src/server/*.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_INC) -o $@ fuzz/shdict.c src/server/shdict.c src/server/log.c -pthread

fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/%)

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus-$$t fuzz/corpus/$$t; \
	    echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	    build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -close_fd_mask=2 \
	        -print_final_stats=1 build/fuzz/corpus-$$t fuzz/corpus/$$t 2>&1 \
	        | grep -E -A40 '^(#[0-9]+.*DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY)' \
	        | grep -v '^INFO' ; \
	    test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

fuzz-replay: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	    n=$$(ls fuzz/corpus/$$t | wc -l); \
	    build/fuzz/$$t -runs=0 -close_fd_mask=2 fuzz/corpus/$$t >/dev/null 2>build/fuzz/replay-$$t.log \
	        || { cat build/fuzz/replay-$$t.log; exit 1; }; \
	    echo "fuzz-replay $$t: $$n inputs, no crash"; \
	done

fuzz-save: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	    build/fuzz/$$t -merge=1 -close_fd_mask=2 fuzz/corpus/$$t build/fuzz/corpus-$$t 2>/dev/null; \
	done

# The integration specs with ./afcgi under valgrind memcheck: any memory
# error or definite/indirect leak in any server process fails the target.
spec-valgrind: afcgi | $(BUILD)
	@echo "== specs on ./afcgi under valgrind memcheck"
	@rm -rf build/valgrind && mkdir -p build/valgrind && chmod 1777 build/valgrind # workers may run as --user nobody
	@export AFCGI_BIN=$(CURDIR)/spec/support/valgrind-afcgi VALGRIND_LOGS=$(CURDIR)/build/valgrind; \
	    $(RUN_SPECS)
	@n=$$(ls build/valgrind | wc -l); bad=$$(grep -l '==[0-9]*== .' build/valgrind/* || true); \
	if [ -n "$$bad" ]; then cat $$bad; echo "valgrind: reports in $$bad"; exit 1; fi; \
	echo "valgrind: $$n server processes, no memory errors, no definite or indirect leaks"
