/*
 * fuzz_conn.c: libFuzzer target for the whole connection state machine.
 * One server (no listeners) runs spec/fixtures/fuzz_app.lua; each input
 * becomes one connection over a socketpair. The first byte sets how many
 * bytes each feed carries, so records split across reads are exercised; the
 * loop runs between feeds so handlers wake, write and end; whatever is still
 * open at the end is closed, aborting its requests. ASan/LSan check that
 * every path frees what it took.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "conn.h"
#include "core.h"
#include "log.h"
#include "server.h"
#include "vm.h"

#ifndef FUZZ_APP
#define FUZZ_APP "spec/fixtures/fuzz_app.lua"
#endif
#ifndef FUZZ_LUA_DIR
#define FUZZ_LUA_DIR "lua"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/*
 * libFuzzer checks for leaks after an input while the server lives on. The
 * JIT keeps some of its buffers (the IR buffer, for one) only through
 * pointers biased outside the block, so LeakSanitizer cannot see them
 * between inputs. Everything the Lua state allocates is freed by lua_close
 * (spec-valgrind checks that at exit), so its allocator is left out here;
 * leaks of the server's own C objects are still reported.
 */
const char *__lsan_default_suppressions(void)
{
    return "leak:vm_alloc\n";
}

static struct core *fuzz_core(void)
{
    static struct server *srv;
    struct listeners none = { .n = 0, .pass_fd = -1 };
    struct config cfg = {
        .app = FUZZ_APP,
        .max_conns = 16,
        .max_reqs = 64,
        .max_conn_reqs = 32,
        .max_params = 4096,
        .max_body = 65536,
        .body_buffer = 16384, /* bodies over it reach the temporary-file path too */
        .body_memory = 1 << 20,
        .temp_dir = "/tmp",
        .high_water = 65536,
        .shutdown_timeout = 1,
    };
    char err[512];

    if (srv == NULL) {
        setenv("AFCGI_LUA_DIR", FUZZ_LUA_DIR, 1);
        log_set_level(LOG_ERROR);
        if ((srv = server_new(&cfg, &none, 1, err, sizeof err)) == NULL) {
            fprintf(stderr, "fuzz_conn: %s\n", err);
            abort();
        }
    }
    return server_core(srv);
}

/* Run the loop a few turns, reading (and dropping) what the server wrote. */
static void fuzz_turns(struct core *core, int peer, int turns)
{
    static uint8_t sink[1 << 16];

    for (int i = 0; i < turns; i++) {
        event_base_loop(core->sched.base, EVLOOP_NONBLOCK);
        while (read(peer, sink, sizeof sink) > 0)
            ;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct core *core = fuzz_core();
    size_t step, off;
    int sv[2];

    if (size < 1 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return 0;
    step = data[0] ? data[0] : 1;
    if (conn_new(core, sv[0], "fuzz") == NULL) {
        close(sv[1]);
        return 0;
    }
    for (off = 1; off < size && core->conns != NULL; off += step) {
        size_t n = size - off < step ? size - off : step;

        if (conn_feed(core->conns, data + off, n) < 0)
            break;
        fuzz_turns(core, sv[1], 2);
    }
    fuzz_turns(core, sv[1], 4);
    while (core->conns != NULL)
        conn_free(core->conns); /* aborts whatever is still in flight */
    fuzz_turns(core, sv[1], 1);
    close(sv[1]);
    vm_collect(core->vm); /* garbage of this input goes now, not in a later one */
    return 0;
}
