-- Interop with what starts afcgi and what talks to it, when neither was
-- written here (issue 18).
--
-- Signals: managers such as kcgi's kfcgi, and some supervisors, block
-- SIGTERM, SIGHUP and SIGCHLD before they fork and exec; nohup and some init
-- scripts leave SIGHUP ignored. afcgi must start from its own signal state
-- whatever it inherited, and so must its workers. The spec execs afcgi from
-- a parent that did both (a few lines of Python between the spec and
-- afcgi), as a single process, with --workers 2, and with --workers 2
-- --dispatch pass (the master hands the workers their connections as
-- descriptors with cookies, the protocol kfcgi speaks): SIGHUP must load the
-- new code, SIGTERM must let the request in flight finish and exit 0 within
-- --shutdown-timeout.
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local socket = require "socket"
local psignal = require "posix.signal"

-- Blocks SIGTERM, SIGHUP and SIGCHLD, ignores SIGHUP, then execs argv[1..].
local BLOCKING_PARENT = {
    "/usr/bin/python3", "-c",
    "import signal, os, sys\n"
        .. "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD})\n"
        .. "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        .. "os.execv(sys.argv[1], sys.argv[1:])\n",
}

-- Answers "VERSION PID"; /sleep?ms=N flushes "started VERSION PID" first,
-- sleeps N ms, then adds " done".
local APP = [[
local afcgi = require "afcgi"
local f = assert(io.open("/proc/self/stat"))
local PID = f:read("*l"):match("^(%%d+)")
f:close()
return function(req, res)
    res:header("Content-Type", "text/plain")
    if req.path == "/sleep" then
        res:write("started %s ", PID)
        res:flush()
        afcgi.sleep(tonumber(req.query:match("ms=(%%d+)")) / 1000)
        return res:write(" done")
    end
    res:write("%s ", PID)
end
]]

local SHUTDOWN_TIMEOUT = 5

-- The bits of a /proc/PID/status signal mask ("SigBlk", "SigIgn") as a
-- number; signal n is bit n - 1.
local function sigmask(pid, field)
    local hex = assert(proc.status_field(pid, field), field .. " of pid " .. pid)
    return tonumber(hex, 16)
end

local function has_signal(mask, sig)
    return math.floor(mask / 2 ^ (sig - 1)) % 2 == 1
end

-- afcgi with args, exec'd from the blocking parent; returns the process
-- once it is ready, with .addr (stopped at cleanup with SIGKILL if the spec
-- has not stopped it).
local function start_blocked(args)
    local argv = {}
    for _, a in ipairs(BLOCKING_PARENT) do argv[#argv + 1] = a end
    argv[#argv + 1] = helpers.bin()
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local p = helpers.spawn(argv)
    helpers.defer(function() p:stop(psignal.SIGKILL, 2) end)
    local line = p:wait_log("ready, listening on ", 15)
    p.addr = line:match("ready, listening on (%S+)")
    return p
end

local function ask(p, uri)
    local c = fc.connect(p.addr)
    local r = c:request(1, uri)
    c:close()
    assert.equal(200, r.status, r.stdout)
    return r.body
end

local MODES = {
    { name = "a single process", args = {}, procs = 1 },
    { name = "--workers 2", args = { "--workers", "2" }, procs = 2 },
    { name = "--workers 2 --dispatch pass", args = { "--workers", "2", "--dispatch", "pass" }, procs = 2 },
}

describe("started with SIGTERM, SIGHUP and SIGCHLD blocked and SIGHUP ignored", function()
    after_each(helpers.cleanup)

    for _, mode in ipairs(MODES) do
        it(mode.name .. " reloads on SIGHUP and drains and exits 0 on SIGTERM", function()
            local dir = proc.tmpdir()
            local app = dir .. "/app.lua"
            proc.write_file(app, APP:format("v1", "v1"))
            local args = { "--listen", "127.0.0.1:0", "--shutdown-timeout", tostring(SHUTDOWN_TIMEOUT) }
            for _, a in ipairs(mode.args) do args[#args + 1] = a end
            args[#args + 1] = app
            local p = start_blocked(args)
            local servers = { p.pid }
            if mode.procs > 1 then servers = proc.wait_children(p.pid, mode.procs) end
            -- the parent's state is gone: nothing blocked where requests are
            -- served, SIGHUP and SIGTERM not ignored anywhere
            for _, pid in ipairs(servers) do
                assert.equal(0, sigmask(pid, "SigBlk"), "signals blocked in pid " .. pid)
            end
            for _, pid in ipairs({ p.pid, unpack(servers) }) do
                local ign = sigmask(pid, "SigIgn")
                assert.is_false(has_signal(ign, psignal.SIGHUP), "SIGHUP ignored in pid " .. pid)
                assert.is_false(has_signal(ign, psignal.SIGTERM), "SIGTERM ignored in pid " .. pid)
                assert.is_false(has_signal(ign, psignal.SIGCHLD), "SIGCHLD ignored in pid " .. pid)
            end
            assert.matches("^v1 %d+$", ask(p, "/"))

            -- SIGHUP: every serving process loads the new code
            proc.write_file(app, APP:format("v2", "v2"))
            local mark = p:mark()
            psignal.kill(p.pid, psignal.SIGHUP)
            helpers.wait_until(function()
                return #p:lines("reloaded [^\n]*: generation 2 serves new requests", mark) == mode.procs
            end, 10, mode.procs .. " reload lines; log:\n" .. p:log())
            for _ = 1, 4 * mode.procs do assert.matches("^v2 %d+$", ask(p, "/")) end

            -- SIGTERM: the request in flight finishes, then a clean exit
            local c = fc.connect(p.addr, { timeout = SHUTDOWN_TIMEOUT + 5 })
            helpers.defer(function() c:close() end)
            proc.send(c, 1, "/sleep?ms=500")
            assert.matches("started v2 %d+$", proc.wait_started(c, 1))
            local t0 = socket.gettime()
            psignal.kill(p.pid, psignal.SIGTERM)
            local r = c:read_response(1)
            assert.equal(200, r.status)
            assert.matches("^started v2 %d+ done$", r.body)
            local status, how = p:stop(false, SHUTDOWN_TIMEOUT + 2)
            local took = socket.gettime() - t0
            assert.equal("exited", how, p.text)
            assert.equal(0, status, p.text)
            assert.is_true(took < SHUTDOWN_TIMEOUT, ("took %.2f s to exit"):format(took))
            assert.is_nil(p.text:find("past the shutdown timeout", 1, true), p.text)
            assert.is_nil(p.text:find("Sanitizer", 1, true), p.text)
            assert.is_nil(p.text:find("runtime error", 1, true), p.text)
            for _, pid in ipairs(servers) do proc.wait_gone(pid, 2) end
        end)
    end
end)
