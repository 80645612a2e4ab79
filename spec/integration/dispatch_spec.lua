-- Connections passed as descriptors: kcgi's FCGI_LISTENSOCK_DESCRIPTORS
-- protocol (each connection arrives as a descriptor with a 64-bit cookie,
-- and the cookie goes back once the connection is closed), and the master's
-- --dispatch pass, which speaks it to its workers.
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local ffi = require "ffi"
local psocket = require "posix.sys.socket"
local unistd = require "posix.unistd"
local ppoll = require "posix.poll"
local socket = require "socket"

ffi.cdef [[
struct afcgi_iovec { void *base; size_t len; };
struct afcgi_msghdr {
    void *name; unsigned namelen; struct afcgi_iovec *iov; size_t iovlen;
    void *control; size_t controllen; int flags;
};
struct afcgi_cmsg_int { size_t len; int level; int type; int fd; int pad; };
long sendmsg(int fd, const struct afcgi_msghdr *msg, int flags);
]]

local SOL_SOCKET, SCM_RIGHTS = 1, 1

-- Pass descriptor fd over the unix socket ctl with a 64-bit cookie, as
-- kcgi's kfcgi does (Linux x86_64 layout of msghdr and cmsghdr).
local function send_fd(ctl, fd, cookie)
    local data = ffi.new("uint64_t[1]", cookie)
    local iov = ffi.new("struct afcgi_iovec[1]", { { data, 8 } })
    local cm = ffi.new("struct afcgi_cmsg_int[1]")
    cm[0].len, cm[0].level, cm[0].type, cm[0].fd = 20, SOL_SOCKET, SCM_RIGHTS, fd
    local msg = ffi.new("struct afcgi_msghdr[1]")
    msg[0].iov, msg[0].iovlen, msg[0].control, msg[0].controllen = iov, 1, cm, 24
    local n = ffi.C.sendmsg(ctl, msg, 0)
    assert(n == 8, "sendmsg failed: errno " .. ffi.errno())
end

-- The next 8-byte cookie written back on ctl, within timeout seconds.
local function read_cookie(ctl, timeout)
    assert(ppoll.rpoll(ctl, math.floor(timeout * 1000)) > 0, "no cookie came back")
    local bytes = assert(psocket.recv(ctl, 8))
    assert.equal(8, #bytes)
    local v = ffi.new("uint64_t[1]")
    ffi.copy(v, bytes, 8)
    return v[0]
end

describe("FCGI_LISTENSOCK_DESCRIPTORS (kcgi's manager protocol)", function()
    after_each(helpers.cleanup)

    it("serves a passed connection and writes its cookie back when it closes", function()
        local ours, theirs = assert(psocket.socketpair(psocket.AF_UNIX, psocket.SOCK_STREAM, 0))
        local srv = helpers.start_afcgi({ "--shutdown-timeout", "3", helpers.fixture("lifecycle") },
                               { fds = { [3] = theirs },
                                 env = { FCGI_LISTENSOCK_DESCRIPTORS = "3" } })
        unistd.close(theirs)
        assert.matches("ready, listening on descriptors:3", srv.ready_line)
        -- play the manager: accept a client and hand its socket over
        local lfd, port = proc.tcp_listener()
        local c = fc.connect("127.0.0.1:" .. port)
        local cfd = assert(psocket.accept(lfd))
        local cookie = 0x1122334455667788ULL
        send_fd(ours, cfd, cookie)
        unistd.close(cfd)
        assert.matches("^pid=" .. srv.pid .. " gen=1", c:request(1, "/").body)
        assert.matches("^pid=" .. srv.pid, c:request(2, "/").body) -- the connection stays
        c:close()
        assert.equal(cookie, read_cookie(ours, 5))
        unistd.close(lfd)
        -- the manager going away stops the server, which exits 0
        unistd.close(ours)
        srv:wait_log("the connection manager closed its socket: stopping", 5)
        assert.equal(0, (srv:stop(false, 5)))
    end)
end)

describe("--dispatch pass", function()
    after_each(helpers.cleanup)

    it("answers a handler that flushes without a Nagle delay, as --dispatch shared does", function()
        -- /sleep?ms=1 writes its first part (flushed), then the rest: with
        -- Nagle's algorithm on, the second write waits for the client's
        -- delayed ACK of the first (40 ms on Linux) on every request
        local took = {}
        for _, mode in ipairs({ "shared", "pass" }) do
            local srv = helpers.start_server("lifecycle", { args = { "--workers", "1",
                                                                     "--dispatch", mode } })
            local c = helpers.connect(srv)
            assert.equal(200, c:request(1, "/").status)
            local t0 = socket.gettime()
            for i = 1, 20 do
                local r = c:request(1, "/sleep?ms=1&r=" .. i)
                assert.equal(200, r.status)
                assert.matches(" started done$", r.body)
            end
            took[mode] = socket.gettime() - t0
            c:close()
            srv:stop()
        end
        -- 20 flushes held back 40 ms each would add 0.8 s
        assert.is_true(took.pass < took.shared + 0.4,
                       ("pass %.3f s, shared %.3f s"):format(took.pass, took.shared))
    end)

    it("spreads a burst of long-lived connections evenly over the workers", function()
        local srv = helpers.start_server("lifecycle", {
            args = { "--workers", "2", "--dispatch", "pass", "--status-path", "/status" } })
        local kids = proc.wait_children(srv.pid, 2)
        local n, conns, per = 40, {}, {}
        for i = 1, n do
            conns[i] = helpers.connect(srv)
            proc.send(conns[i], 1, "/sleep?ms=60000")
        end
        for i = 1, n do
            local pid = tonumber(proc.wait_started(conns[i], 1, 10):match("pid=(%d+)"))
            per[pid] = (per[pid] or 0) + 1
        end
        assert.equal(2, #kids)
        for _, pid in ipairs(kids) do
            assert.is_true((per[pid] or 0) >= n / 2 - 2,
                           ("worker %d holds %d of %d connections"):format(pid, per[pid] or 0, n))
        end
        for i = 1, n do conns[i]:close() end
    end)

    it("serves kept-alive and new connections through the master", function()
        local srv = helpers.start_server("lifecycle", {
            args = { "--workers", "2", "--dispatch", "pass" } })
        local c = helpers.connect(srv)
        for id = 1, 20 do assert.matches("^pid=%d+ gen=1", c:request(id, "/").body) end
        for _ = 1, 20 do
            local once = helpers.connect(srv)
            assert.matches("^pid=%d+ gen=1", once:request(1, "/").body)
            once:close()
        end
    end)
end)
