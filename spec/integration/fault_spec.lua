-- Faults: a worker under hostile or broken traffic keeps serving everyone
-- else, holds bounded memory and descriptors, and logs what happened.
local helpers = require "helpers"
local fc = require "fcgi_client"
local socket = require "socket"
local psignal = require "posix.signal"

-- The peak resident set of pid so far, in kB (VmHWM).
local function peak_kb(pid)
    local f = assert(io.open("/proc/" .. pid .. "/status"))
    local kb = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
    f:close()
    return kb
end

local function ok_body(c, id)
    local r = c:request(id, "/")
    assert.equal(200, r.status)
    return r.body
end

describe("faults", function()
    after_each(helpers.cleanup)

    it("answers 408 to a client that sends its body too slowly for --request-timeout", function()
        local srv = helpers.start_server("faults", { args = { "--request-timeout", "0.5" } })
        local c = helpers.connect(srv)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/body", nil, 100))
        local t0 = socket.gettime()
        c:stdin(1, "x")                    -- one byte, then nothing more
        local r = c:read_response(1, 5)
        local took = socket.gettime() - t0
        assert.equal(408, r.status)
        assert.is_true(took >= 0.45 and took < 2, ("answered after %.3f s"):format(took))
        srv:wait_log("timed out after .* answered 408", 5)
        assert.equal("ok", ok_body(c, 2))  -- the connection stays usable
    end)

    it("answers 504 to a handler still sleeping at --request-timeout and frees it", function()
        local srv = helpers.start_server("faults", { args = { "--request-timeout", "0.3" } })
        local c = helpers.connect(srv)
        assert.equal("ok", ok_body(c, 100))  -- accepted: its descriptor is counted
        local fds = helpers.fd_count(srv.pid)
        for id = 1, 50 do
            c:begin(id); c:params(id, fc.cgi_params("GET", "/sleep?ms=60000")); c:stdin(id, "")
        end
        for id = 1, 50 do assert.equal(504, c:read_response(id, 5).status) end
        assert.equal("ok", ok_body(c, 51))
        assert.equal(fds, helpers.fd_count(srv.pid))
    end)

    it("fails only the handler that allocates without end, and takes its memory back", function()
        local srv = helpers.start_server("faults", { args = { "--lua-memory", "64m" } })
        local c = helpers.connect(srv)
        local before = helpers.rss_kb(srv.pid)
        local r = c:request(1, "/hog", nil, { timeout = 20 })
        assert.equal(500, r.status)
        srv:wait_log("handler error: not enough memory", 5)
        assert.equal("ok", ok_body(c, 2))
        if not helpers.asan then
            assert.is_true(helpers.rss_kb(srv.pid) < before + 100 * 1024,
                           "RSS grew past the 64 MiB limit")
        end
    end)

    it("holds back an upload its only request reads slowly, instead of buffering it", function()
        local srv = helpers.start_server("faults", { args = { "--max-body", "1g" } })
        local c = helpers.connect(srv, nil, { timeout = 30 })
        assert.equal("ok", ok_body(c, 9))
        local before = helpers.rss_kb(srv.pid)
        local mb, chunk = 24, ("x"):rep(1048576)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/slowread?ms=2", nil, mb * 1048576))
        for _ = 1, mb do c:stdin(1, chunk) end   -- blocks while the server holds back
        c:stdin(1, "")
        local r = c:read_response(1, 30)
        assert.equal(tostring(mb * 1048576), r.body)
        local grown = peak_kb(srv.pid) - before
        print(("  %d MiB read 64 KiB per 2 ms: server peak RSS %d kB over its level before"):format(
            mb, grown))
        if not helpers.asan then
            assert.is_true(grown < 8 * 1024, "the server buffered the upload: +" .. grown .. " kB")
        end
    end)

    it("leaves connections beyond --max-conns in the backlog, then serves them", function()
        local srv = helpers.start_server("faults", { args = { "--max-conns", "3" } })
        local held = {}
        for i = 1, 3 do
            held[i] = helpers.connect(srv)
            assert.equal("ok", ok_body(held[i], 1))          -- accepted and served
        end
        srv:wait_log("%-%-max%-conns %(3%) reached", 5)
        local waiting = helpers.connect(srv)                   -- in the kernel's backlog
        waiting:begin(1); waiting:params(1, fc.cgi_params("GET", "/")); waiting:stdin(1, "")
        local ok = pcall(waiting.read_record, waiting, 0.3)
        assert.is_false(ok, "a fourth connection was served beyond --max-conns 3")
        held[1]:close()                                        -- room again: it is accepted
        assert.equal("ok", waiting:read_response(1, 5).body)
    end)

    it("keeps serving while a handler raises errors in a loop", function()
        local srv = helpers.start_server("faults")
        local c = helpers.connect(srv)
        for id = 1, 500 do
            assert.equal(500, c:request(id, "/error").status)
        end
        local rss = helpers.rss_kb(srv.pid)
        for id = 501, 1500 do
            assert.equal(500, c:request(id % 65535 + 1, "/error").status)
        end
        if not helpers.asan then
            assert.is_true(helpers.rss_kb(srv.pid) < rss + 8 * 1024, "RSS grows with errors")
        end
        assert.equal("ok", ok_body(c, 2000))
    end)

    it("holds at most about --high-water for a client that never reads 100 MB", function()
        local srv = helpers.start_server("faults", { args = { "--high-water", "256k" } })
        local stuck = helpers.connect(srv)
        local before = helpers.rss_kb(srv.pid)
        stuck:begin(1); stuck:params(1, fc.cgi_params("GET", "/big?mb=100")); stuck:stdin(1, "")
        -- other connections are served promptly while the writer waits
        local other = helpers.connect(srv)
        local t0 = socket.gettime()
        for id = 1, 20 do assert.equal("ok", ok_body(other, id)) end
        assert.is_true(socket.gettime() - t0 < 1, "other connections were held up")
        -- the writer is parked: kernel buffers plus the high-water mark, not 100 MB
        helpers.wait_until(function()
            return helpers.rss_kb(srv.pid) > before
        end, 5, "the big response to start")
        if not helpers.asan then
            assert.is_true(helpers.rss_kb(srv.pid) < before + 16 * 1024,
                           ("RSS %d kB over %d kB"):format(helpers.rss_kb(srv.pid), before))
        end
        stuck:close()
        assert.equal("ok", ok_body(other, 21))
    end)

    it("gives back memory and descriptors of a connection dropped with 10,000 requests", function()
        local srv = helpers.start_server("faults", {
            args = { "--max-reqs", "20000", "--max-conn-reqs", "20000" } })
        local probe = helpers.connect(srv)
        assert.equal("ok", ok_body(probe, 1))
        local fds, rss = helpers.fd_count(srv.pid), { helpers.rss_kb(srv.pid) }
        for round = 2, 5 do
            local c = fc.connect(srv.addr)
            c:cork()
            for id = 1, 10000 do
                c:begin(id); c:params(id, fc.cgi_params("GET", "/sleep?ms=60000")); c:stdin(id, "")
            end
            c:uncork()
            c:get_values({ "FCGI_MPXS_CONNS" })    -- all 10,000 have been read
            c:close()
            assert.equal("ok", ok_body(probe, round + 1))
            helpers.wait_until(function() return helpers.fd_count(srv.pid) == fds end, 5,
                               "the dropped connection's descriptor to be closed")
            assert.equal("ok", ok_body(probe, round + 10)) -- after the collection it queued
            rss[round] = helpers.rss_kb(srv.pid)
        end
        print(("  10,000 requests dropped per round; RSS kB before, then after each: %s"):format(
            table.concat(rss, " ")))
        if not helpers.asan then
            assert.is_true(rss[5] - rss[1] < 4096, "RSS does not come back: " .. table.concat(rss, " "))
        end
    end)

    it("interrupts a handler that runs past --cpu-timeout and serves the others after", function()
        local srv = helpers.start_server("faults", { args = { "--cpu-timeout", "0.5" } })
        local c = helpers.connect(srv)
        c:begin(2); c:params(2, fc.cgi_params("GET", "/sleep?ms=100")); c:stdin(2, "")
        local r = c:request(1, "/spin", nil, { timeout = 10 })
        assert.equal(500, r.status)
        srv:wait_log("cpu timeout: the handler ran", 5)
        assert.equal("slept", c:read_response(2, 5).body)
        assert.equal("ok", ok_body(c, 3))
    end)

    it("exits with status 70 when a compiled loop cannot be interrupted", function()
        local srv = helpers.start_server("faults", { args = { "--cpu-timeout", "0.5" },
                                                      manual = true })
        helpers.defer(function() srv:stop(psignal.SIGKILL, 2) end)
        local c = helpers.connect(srv)
        c:begin(2); c:params(2, fc.cgi_params("GET", "/sleep?ms=60000")); c:stdin(2, "")
        c:begin(1); c:params(1, fc.cgi_params("GET", "/tight")); c:stdin(1, "")
        -- the request waiting beside it ends with an error, it does not hang
        assert.is_true(c:closed_by_peer(10), "the connection stayed open")
        srv:wait_log("could not stop it", 5)
        assert.equal(70, (srv:stop(false, 5)))
    end)

    it("recovers from descriptor exhaustion without spinning or dying", function()
        local srv = helpers.start_server("faults", { rlimit_nofile = 48 })
        local conns = {}
        for i = 1, 60 do                     -- more than the server may open
            local ok, c = pcall(fc.connect, srv.addr, { timeout = 2 })
            if ok then conns[i] = c end
        end
        srv:wait_log("accept failed: Too many open files", 5)
        for _, c in pairs(conns) do c:close() end
        local c = helpers.wait_until(function()
            local ok, conn = pcall(fc.connect, srv.addr, { timeout = 1 })
            if not ok then return nil end
            local rok, r = pcall(conn.request, conn, 1, "/", nil, { timeout = 1 })
            if rok and r.status == 200 then return conn end
            conn:close()
        end, 10, "the server to serve again after its descriptors came back")
        assert.equal("ok", ok_body(c, 2))
        c:close()
    end)
end)
