-- The slow log (--slow-timeout, --slow-log) against the real binary: one
-- entry per slow request, naming what its handler and its light threads
-- wait on, with tracebacks that point into the fixture's functions and
-- lines; nothing for requests that end in time. Waits are on the log's
-- contents, each with a deadline.
local helpers = require "helpers"
local proc = require "proc"
local prom = require "prom"
local psignal = require "posix.signal"
local unistd = require "posix.unistd"

local FIXTURE = helpers.fixture("metrics")

-- The fixture's line marked "-- @name".
local function line_of(name)
    local n = 0
    for line in helpers.read_file(FIXTURE):gmatch("([^\n]*)\n") do
        n = n + 1
        if line:find("-- @" .. name, 1, true) then return n end
    end
    error("no line marked @" .. name .. " in " .. FIXTURE)
end

-- The entries of a slow log text: each starts at a "slow request:" line.
local function entries(text)
    local out, cur = {}, nil
    for line in text:gmatch("([^\n]*)\n") do
        if line:find("slow request: ", 1, true) then
            cur = { line }
            out[#out + 1] = cur
        elseif cur then
            cur[#cur + 1] = line
        end
    end
    for i, e in ipairs(out) do out[i] = table.concat(e, "\n") .. "\n" end
    return out
end

-- Waits until the file at path holds n entries; returns them.
local function wait_entries(path, n, timeout)
    local got
    helpers.wait_until(function()
        got = entries(helpers.read_file(path))
        return #got >= n
    end, timeout or 20, n .. " slow log entries in " .. path)
    return got
end

local function pattern(s) return (s:gsub("%p", "%%%0")) end

describe("the slow log", function()
    after_each(helpers.cleanup)

    it("writes one entry per slow request: its waits and the tracebacks of its coroutines", function()
        local dir = proc.tmpdir()
        local log = dir .. "/slow.log"
        local srv = helpers.start_server("metrics", { args = { "--workers", "2", "--slow-timeout", "0.3",
            "--slow-log", log, "--status-path", "/status" } })
        local lfd, port = proc.tcp_listener()
        helpers.defer(function() unistd.close(lfd) end)
        local c = helpers.connect(srv)
        proc.send(c, 5, "/hold?port=" .. port)
        local pid = proc.wait_started(c, 5):match("pid=(%d+)")
        local e = wait_entries(log, 1)[1]
        assert.matches("^%d+%-%d+%-%d+T[%d:]+Z %[warn%] afcgi%[" .. pid .. "%]: slow request: conn %d+ "
                       .. "request 5 GET " .. pattern("/hold?port=" .. port) .. ":\n", e)
        local secs = tonumber(e:match("\n    in flight ([%d.]+) s %(%-%-slow%-timeout 0%.3%), generation 1\n"))
        assert.is_true(secs ~= nil and secs >= 0.3 and secs < 30, e)
        -- the handler: what it waits on, and where in the fixture
        assert.matches("\n    handler: waiting for a socket read %(127%.0%.0%.1:" .. port .. "%)\n"
                       .. "      stack traceback:\n", e)
        assert.matches("\n      \t[^\n]*metrics%.lua:" .. line_of("hold_read") .. ": in function 'hold_read'\n", e)
        -- its light thread, napping
        assert.matches("\n    light thread 1: waiting for afcgi%.sleep, [%d.e+]+ s left\n"
                       .. "      stack traceback:\n", e)
        assert.matches("\n      \t[^\n]*metrics%.lua:" .. line_of("nap") .. ": in function", e)

        -- once per request: a second slow request gets its own entry, the
        -- first no other
        local d = helpers.connect(srv)
        proc.send(d, 6, "/nap?ms=60000")
        proc.wait_started(d, 6)
        local all = wait_entries(log, 2)
        assert.equal(2, #all)
        assert.matches("request 6 GET /nap%?ms=60000:\n", all[2])
        assert.matches("\n    handler: waiting for afcgi%.sleep, [%d.e+]+ s left\n", all[2])
        assert.matches("metrics%.lua:" .. line_of("nap") .. ": in function 'nap'\n", all[2])
        assert.is_nil(all[2]:find("light thread", 1, true))
        -- and the figures count them
        assert.equal(2, prom.sum(prom.scrape(helpers.connect(srv), 1), "afcgi_slow_requests_total"))
        c:abort(5)
        d:abort(6)
        c:read_response(5)
        d:read_response(6)
        assert.equal(2, #entries(helpers.read_file(log)))
    end)

    it("writes nothing for requests that end before --slow-timeout", function()
        local dir = proc.tmpdir()
        local log = dir .. "/slow.log"
        local srv = helpers.start_server("metrics", { args = { "--slow-timeout", "1", "--slow-log", log } })
        local c = helpers.connect(srv)
        for i = 1, 200 do assert.equal(200, c:request(i, "/").status) end
        for i = 201, 210 do assert.equal(200, c:request(i, "/nap?ms=10").status) end
        -- then one that is slow: its entry is the only one
        proc.send(c, 300, "/nap?ms=60000")
        proc.wait_started(c, 300)
        local all = wait_entries(log, 1)
        assert.equal(1, #all)
        assert.matches("request 300 GET /nap%?ms=60000:", all[1])
        c:abort(300)
        c:read_response(300)
    end)

    it("goes to the error log without --slow-log; a request still sending its params says so", function()
        local srv = helpers.start_server("metrics", { args = { "--slow-timeout", "0.2" } })
        local c = helpers.connect(srv)
        c:begin(4)
        c:send_raw(require("fcgi_client").params_records(4, { REQUEST_METHOD = "GET" }, { open = true }))
        srv:wait_log("slow request: conn %d+ request 4 GET %-:", 20)
        helpers.wait_until(function()
            return srv:log():find("\n    receiving its params %(%d+ bytes so far%)\n") ~= nil
        end, 10, "the entry's body in the error log")
    end)

    it("reopens its file on SIGUSR1", function()
        local dir = proc.tmpdir()
        local log = dir .. "/slow.log"
        local srv = helpers.start_server("metrics", { args = { "--slow-timeout", "0.2", "--slow-log", log } })
        local c = helpers.connect(srv)
        proc.send(c, 1, "/nap?ms=60000")
        proc.wait_started(c, 1)
        wait_entries(log, 1)
        assert(os.rename(log, log .. ".1"))
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGUSR1)
        srv:wait_log("reopened the log files", 10, mark)
        proc.send(c, 2, "/nap?ms=60000")
        proc.wait_started(c, 2)
        local fresh = wait_entries(log, 1)
        assert.matches("request 2 GET", fresh[1])
        assert.equal(1, #entries(helpers.read_file(log .. ".1")))
        c:abort(1)
        c:abort(2)
        c:read_response(1)
        c:read_response(2)
    end)

    it("refuses --slow-log without --slow-timeout", function()
        local status, err = helpers.run_cli({ "--slow-log", "/tmp/x.log", FIXTURE })
        assert.equal(2, status)
        assert.matches("%-%-slow%-log needs %-%-slow%-timeout", err)
    end)
end)
