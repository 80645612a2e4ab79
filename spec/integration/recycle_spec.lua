-- Worker recycling (--worker-max-requests, --worker-max-lua-memory): a
-- worker past its bound asks the master for a replacement, the master
-- starts it, and once it has loaded the app the old worker retires: it
-- accepts no more, finishes its requests, hands each connection (with what
-- it had read of it and not used) back to the master, which passes it on,
-- and exits. Under load, with either dispatch mode and behind nginx, no
-- request fails and no connection is refused or cut.
local dirent = require "posix.dirent"
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local cjson = require "cjson"
local psignal = require "posix.signal"
local socket = require "socket"

local NO_ERRORS = { connect = 0, read = 0, protocol = 0, status = 0, body = 0, timeout = 0,
                    overloaded = 0 }

-- Runs afcgi-bench --json with args against srv to completion (at most
-- timeout seconds); returns its report and exit status.
local function bench(srv, args, timeout)
    local argv = { helpers.bench_bin(), "--json" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv[#argv + 1] = srv.addr
    local b = helpers.spawn(argv, { stdout = true })
    helpers.defer(function() b:stop(psignal.SIGKILL, 2) end)
    local status = b:finish(timeout or 120)
    local ok, report = pcall(cjson.decode, b.out)
    assert(ok, "afcgi-bench printed no report: " .. b.out .. b.text)
    return report, status
end

-- The pid in a lifecycle answer ("pid=N gen=G ...").
local function pid_of(r)
    assert.equal(200, r.status, r.body)
    return tonumber(r.body:match("^pid=(%d+)"))
end

local function has(list, x)
    for _, v in ipairs(list) do if v == x then return true end end
    return false
end

-- Waits until worker pid has been replaced and is gone, its lines logged
-- (after mark): why it asked (a Lua pattern), its replacement ready, its
-- retirement. Returns the replacement's pid.
local function wait_replaced(srv, pid, why, mark, timeout)
    timeout = timeout or 60
    srv:wait_log("afcgi%[" .. pid .. "%]: worker %d+: " .. why
                 .. ": asking the master for a replacement", timeout, mark)
    local ready = srv:wait_log("worker %d+ %(pid %d+%) ready: pid " .. pid .. " retires", timeout,
                               mark)
    srv:wait_log("afcgi%[" .. pid .. "%]: worker %d+ retiring: its replacement serves", timeout,
                 mark)
    srv:wait_log("worker %d+ %(pid " .. pid .. "%) retired%s*$", timeout, mark)
    proc.wait_gone(pid, timeout)
    return tonumber(ready:match("%(pid (%d+)%) ready"))
end

-- Nothing went wrong in the log after mark.
local function assert_quiet(srv, mark)
    assert.same({}, srv:lines("%[error%]", mark))
    assert.same({}, srv:lines("%[warn%]", mark))
end

describe("--worker-max-requests", function()
    after_each(helpers.cleanup)

    for _, mode in ipairs({ "shared", "pass" }) do
        it(("--dispatch %s: under load, every worker is replaced and no request fails"):format(mode),
           function()
            local srv = helpers.start_server("lifecycle", { args = {
                "--workers", "2", "--dispatch", mode, "--worker-max-requests", "300" } })
            local first = proc.wait_children(srv.pid, 2)
            local mark = srv:mark()
            -- 16 connections with 4 requests in flight on each, kept alive;
            -- in shared mode the kernel picks which worker accepts each, so
            -- rounds (new connections each) go on until both have asked
            local asked = "%d+ requests begun %(%-%-worker%-max%-requests 300%)"
            local function all_asked()
                for _, pid in ipairs(first) do
                    if #srv:lines("afcgi%[" .. pid .. "%]: worker %d+: " .. asked, mark) == 0 then
                        return false
                    end
                end
                return true
            end
            for _ = 1, 10 do
                local report, status = bench(srv, { "-c", "16", "-m", "4", "-n", "3000", "-d",
                    "100s", "-u", "/sleep?ms=2", "--expect-body", "done" })
                assert.same(NO_ERRORS, report.errors)
                assert.same({ 3000, 0, 0 }, { report.ok, report.failed, status })
                if all_asked() then break end
            end
            for _, pid in ipairs(first) do
                wait_replaced(srv, pid, asked, mark)
            end
            local now = proc.wait_children(srv.pid, 2)
            for _, pid in ipairs(now) do assert.is_false(has(first, pid), "worker " .. pid) end
            assert_quiet(srv, mark)
            local c = helpers.connect(srv)                -- and it serves on
            assert.is_true(has(proc.children(srv.pid), pid_of(c:request(1, "/"))))
        end)

        it(("--dispatch %s: behind nginx with keepalive, every HTTP request is answered"):format(mode),
           function()
            local srv = helpers.start_server("lifecycle", { args = {
                "--workers", "2", "--dispatch", mode, "--worker-max-requests", "100" } })
            local first = proc.wait_children(srv.pid, 2)
            local ngx = helpers.start_nginx(nil, { upstream = srv.addr })
            local mark = srv:mark()
            for round = 1, 6 do
                local reqs = {}
                for i = 1, 100 do reqs[i] = { method = "GET", path = "/sleep?ms=3&r=" .. i } end
                local res = helpers.http_parallel(ngx.port, reqs, { window = 32, timeout = 60 })
                for i, r in ipairs(res) do
                    assert(r.status == 200 and (r.body or ""):find(" done$"),
                           ("round %d request %d: %s"):format(round, i, r.error or
                                                              (r.status .. " " .. r.body)))
                end
            end
            for _, pid in ipairs(first) do
                wait_replaced(srv, pid, "%d+ requests begun %(%-%-worker%-max%-requests 100%)", mark)
            end
            assert_quiet(srv, mark)
            -- nginx never saw a connection cut under it (it would have retried and said so)
            local elog = helpers.read_file(ngx.prefix .. "/error.log")
            assert.is_nil(elog:match("[^\n]*upstream[^\n]*"))
        end)

        it(("--dispatch %s: the request in flight finishes on the old worker; the connection, with "
            .. "the bytes the old one had read, goes on with the new"):format(mode), function()
            local srv = helpers.start_server("lifecycle", { args = {
                "--workers", "1", "--dispatch", mode, "--worker-max-requests", "2",
                "--log-level", "debug" } })
            local old = proc.wait_children(srv.pid, 1)[1]
            local warm = helpers.connect(srv)
            assert.equal(old, pid_of(warm:request(1, "/")))    -- request 1 of 2
            warm:close()
            local c = helpers.connect(srv)
            local mark = srv:mark()
            -- request 2 of 2 waits for the rest of its body
            c:begin(1)
            c:params(1, fc.cgi_params("POST", "/body", nil, 6))
            c:stdin(1, "abc")
            local new = tonumber(srv:wait_log("worker 1 %(pid %d+%) ready: pid "
                .. old .. " retires", 60, mark):match("%(pid (%d+)%) ready"))
            srv:wait_log("afcgi%[" .. old .. "%]: worker 1 retiring: its replacement serves; 1 "
                         .. "requests in flight finish here, then its 1 connections go", 10, mark)
            -- the end of that body, then all of the next request but its last 5 bytes: the
            -- old worker reads them at once, ends request 1 and keeps the rest for the new one
            local two = fc.begin_record(2) .. fc.params_records(2, fc.cgi_params("GET", "/"))
                .. fc.stdin_records(2, "")
            c:send_raw(fc.stdin_records(1, "def") .. fc.stdin_records(1, "") .. two:sub(1, -6))
            assert.equal("6", c:read_response(1, 10).body)
            srv:wait_log("afcgi%[" .. old .. "%]: conn %d+ %([^)]*%): handed to the master with "
                         .. (#two - 5) .. " bytes not read yet", 10, mark)
            srv:wait_log("worker 1 %(pid " .. old .. "%) retired%s*$", 10, mark)
            c:send_raw(two:sub(-5))
            assert.equal(new, pid_of(c:read_response(2, 10)))
            assert.equal(new, pid_of(c:request(3, "/")))      -- the same connection, kept
            assert_quiet(srv, mark)
        end)
    end

    it("keeps the old worker serving while its replacement cannot load the app, and retries",
       function()
        local dir = proc.tmpdir()
        local app, text = dir .. "/app.lua", helpers.read_file(helpers.fixture("lifecycle"))
        proc.write_file(app, text)
        local srv = helpers.start_server(app, { args = { "--workers", "1",
                                                         "--worker-max-requests", "1" } })
        local old = proc.wait_children(srv.pid, 1)[1]
        local mark = srv:mark()
        proc.write_file(app, "return function(\n")         -- broken on disk
        local c = helpers.connect(srv)
        assert.equal(old, pid_of(c:request(1, "/")))      -- asks for a replacement
        srv:wait_log("worker 1 %(pid %d+%) cannot start: [^\n]*app%.lua:", 60, mark)
        srv:wait_log("worker 1's replacement %(pid %d+%) exited with status 2; pid " .. old
                     .. " serves on, another try in [%d.]+ s", 60, mark)
        assert.equal(old, pid_of(c:request(2, "/")))
        proc.write_file(app, text)                          -- fixed: the next try works
        local new = wait_replaced(srv, old, "1 requests begun %(%-%-worker%-max%-requests 1%)",
                                  mark)
        assert.equal(new, pid_of(c:request(3, "/")))      -- the connection went over
    end)

    -- --workers 1 --worker-max-requests 1 on an app that takes 3 s to load:
    -- the first request makes the worker ask; the master is stopped while
    -- the replacement loads, and once that one serves a request (its 'R'
    -- written, and its own request to be replaced sent) the master has read
    -- neither. Returns the server (master still stopped), the old worker's
    -- and the replacement's pids, and the log mark.
    local function replacement_unseen_by_stopped_master()
        local loaded = proc.tmpdir() .. "/loaded"
        local srv = helpers.start_server("ops", { args = { "--workers", "1",
            "--worker-max-requests", "1" }, env = { AFCGI_SPEC_LOAD_MS = "3000",
            AFCGI_SPEC_MARK = loaded } })
        local old = proc.wait_children(srv.pid, 1)[1]
        local mark = srv:mark()
        assert.equal(old, pid_of(helpers.connect(srv):request(1, "/")))  -- asks
        local new = tonumber(srv:wait_log("worker 1 %(pid " .. old .. "%) asked to be replaced: "
            .. "starting pid %d+", 30, mark):match("starting pid (%d+)"))
        psignal.kill(srv.pid, psignal.SIGSTOP)              -- it reads nothing meanwhile
        helpers.defer(function() psignal.kill(srv.pid, psignal.SIGCONT) end)
        assert.is_nil(helpers.read_file(loaded):find("loaded pid=" .. new .. "\n", 1, true),
                      "the master was stopped only once the replacement had loaded")
        helpers.wait_until(function()
            return helpers.read_file(loaded):find("loaded pid=" .. new .. "\n", 1, true)
        end, 30, "the replacement to load")
        helpers.wait_until(function()                       -- a request on the new one
            local c = helpers.connect(srv)
            local pid = pid_of(c:request(1, "/"))
            c:close()
            return pid == new
        end, 30, "a connection taken by the replacement")
        srv:wait_log("afcgi%[" .. new .. "%]: worker 1: 1 requests begun", 10, mark)
        return srv, old, new, mark
    end

    it("a replacement that asks for its own before the master has read its 'R' is replaced",
       function()
        local srv, old, new, mark = replacement_unseen_by_stopped_master()
        psignal.kill(srv.pid, psignal.SIGCONT)              -- both its messages at once
        srv:wait_log("worker 1 %(pid " .. new .. "%) ready: pid " .. old .. " retires", 30, mark)
        srv:wait_log("worker 1 %(pid " .. new .. "%) asked to be replaced: starting pid %d+", 30,
                     mark)
    end)

    it("a replacement that died before the master read its 'R' does not retire the old "
                .. "worker", function()
        local srv, old, new, mark = replacement_unseen_by_stopped_master()
        psignal.kill(new, psignal.SIGKILL)
        -- dead, every thread of it (its main thread shows Z while the others
        -- still exit, and only then is it reapable): its SIGCHLD is waiting
        helpers.wait_until(function()
            local threads = 0
            for name in dirent.files("/proc/" .. new .. "/task") do
                if name:match("^%d+$") then threads = threads + 1 end
            end
            return threads == 1 and (helpers.read_file("/proc/" .. new .. "/stat") or "")
                :match("^%d+ %b() (%a)") == "Z"
        end, 30, "the replacement to be a zombie")
        psignal.kill(srv.pid, psignal.SIGCONT)
        srv:wait_log("worker 1's replacement %(pid " .. new .. "%) killed by signal 9; pid " .. old
                     .. " serves on", 30, mark)
        assert.same({}, srv:lines("ready: pid " .. old .. " retires", mark))
        assert.equal(old, pid_of(helpers.connect(srv):request(1, "/")))
    end)

    it("says once that there is no room for a replacement while the old ones still retire",
       function()
        -- --workers 1 has room for 4 processes: 3 retiring, each holding a
        -- request, and the one serving, which asks too
        local srv = helpers.start_server("lifecycle", { args = { "--workers", "1", "--dispatch",
            "pass", "--worker-max-requests", "1", "--shutdown-timeout", "60" } })
        local cur = proc.wait_children(srv.pid, 1)[1]
        local held = {}
        local function hold()
            local c = helpers.connect(srv)
            c:begin(1)
            c:params(1, fc.cgi_params("GET", "/sleep?ms=60000"))
            c:stdin(1, "")
            held[#held + 1] = c
        end
        for _ = 1, 3 do
            local mark = srv:mark()
            hold()
            cur = tonumber(srv:wait_log("worker 1 %(pid %d+%) ready: pid " .. cur .. " retires",
                                        30, mark):match("%(pid (%d+)%) ready"))
        end
        local mark = srv:mark()
        hold()
        srv:wait_log("cannot start worker 1 yet: 3 processes are still retiring %(4 in all", 30,
                     mark)
        for _ = 1, 20 do                                    -- each wakes the master
            local c = helpers.connect(srv)
            assert.equal(cur, pid_of(c:request(1, "/")))
            c:close()
        end
        assert.equal(1, #srv:lines("cannot start worker", mark))
        for _, c in ipairs(held) do c:close() end
        for _, pid in ipairs(proc.children(srv.pid)) do    -- their sleeps would hold the stop
            psignal.kill(pid, psignal.SIGKILL)
            proc.wait_gone(pid)
        end
    end)

    it("SIGHUP reloads the worker that serves, not the one that retires", function()
        local srv = helpers.start_server("lifecycle", { args = { "--workers", "1",
                                                                 "--worker-max-requests", "1" } })
        local old = proc.wait_children(srv.pid, 1)[1]
        local mark = srv:mark()
        local c = helpers.connect(srv)
        c:begin(1)                                          -- asks for a replacement
        c:params(1, fc.cgi_params("GET", "/sleep?ms=2000"))
        c:stdin(1, "")
        local new = tonumber(srv:wait_log("worker 1 %(pid %d+%) ready: pid " .. old .. " retires",
                                          60, mark):match("%(pid (%d+)%) ready"))
        srv:wait_log("afcgi%[" .. old .. "%]: worker 1 retiring", 10, mark)
        psignal.kill(srv.pid, psignal.SIGHUP)
        srv:wait_log("SIGHUP: reloading the app in 1 workers", 10, mark)
        srv:wait_log("afcgi%[" .. new .. "%]: reloaded [^\n]*generation 2 serves", 30, mark)
        assert.matches("^pid=" .. old .. " gen=1 started done$", c:read_response(1, 30).body)
        srv:wait_log("worker 1 %(pid " .. old .. "%) retired%s*$", 30, mark)
        assert.same({}, srv:lines("afcgi%[" .. old .. "%]: reload", mark))
    end)

    it("a retiring worker signalled to the last still exits 0 (retired)", function()
        -- SIGUSR1 (a log rotation) sent to the old worker, again and again
        -- from while its last request runs until it is gone: some arrive
        -- after its loop let go of their handlers, while it frees its
        -- server (a window of a millisecond or less, hit in some 7% of the
        -- rounds before the fix: 30 rounds)
        local srv = helpers.start_server("lifecycle", { args = { "--workers", "1",
                                                                 "--worker-max-requests", "1" } })
        local old = proc.wait_children(srv.pid, 1)[1]
        for round = 1, 30 do
            local mark = srv:mark()
            local c = helpers.connect(srv)
            c:begin(1)                                      -- asks for a replacement
            c:params(1, fc.cgi_params("GET", "/sleep?ms=100"))
            c:stdin(1, "")
            local new = tonumber(srv:wait_log("worker 1 %(pid %d+%) ready: pid " .. old
                                              .. " retires", 60, mark):match("%(pid (%d+)%) ready"))
            local deadline = socket.gettime() + 30
            while proc.running(old) do
                psignal.kill(old, psignal.SIGUSR1)
                assert(socket.gettime() < deadline, "the old worker stays")
            end
            assert.matches("^pid=" .. old .. " gen=1 started done$", c:read_response(1, 10).body)
            c:close()
            local last = srv:wait_log("worker 1 %(pid " .. old .. "%) [rek]", 10, mark)
            assert.matches("worker 1 %(pid " .. old .. "%) retired%s*$", last, nil, nil,
                           "round " .. round)
            old = new
        end
    end)
end)

describe("--worker-max-lua-memory", function()
    after_each(helpers.cleanup)

    for _, mode in ipairs({ "shared", "pass" }) do
        it(("--dispatch %s: replaces a worker that leaks, and no request fails"):format(mode),
           function()
            local srv = helpers.start_server("lifecycle", { args = {
                "--workers", "1", "--dispatch", mode, "--worker-max-lua-memory", "6m" } })
            local old = proc.wait_children(srv.pid, 1)[1]
            local mark = srv:mark()
            local c = helpers.connect(srv)
            local pids = {}
            for i = 1, 200 do                               -- 256 KiB kept per request
                local pid = pid_of(c:request(i, "/leak?kb=256"))
                pids[#pids + 1] = pid
                if pid ~= old then break end
            end
            assert.is_true(pids[#pids] ~= old, "still pid " .. old .. " after 200 requests")
            local new = wait_replaced(srv, old, "Lua memory %d+ KiB after a full collection, over "
                                      .. "%-%-worker%-max%-lua%-memory 6144 KiB", mark)
            assert.equal(new, pids[#pids])
            local kb = tonumber(srv:lines("Lua memory %d+ KiB", mark)[1]:match("Lua memory (%d+) KiB"))
            assert.is_true(kb > 6144, kb)
            assert_quiet(srv, mark)
        end)
    end

    it("does not replace a worker whose memory over the bound was only garbage", function()
        local srv = helpers.start_server("lifecycle", { args = {
            "--workers", "1", "--worker-max-lua-memory", "6m" } })
        local old = proc.wait_children(srv.pid, 1)[1]
        local c = helpers.connect(srv)
        for i = 1, 150 do                                   -- 75 MiB of garbage in all
            assert.equal(old, pid_of(c:request(i, "/garbage?kb=512")))
        end
        assert.same({}, srv:lines("asking the master for a replacement"))
    end)
end)

describe("recycling options", function()
    after_each(helpers.cleanup)

    it("are refused without --workers: a single process has nobody to take over", function()
        for _, args in ipairs({ { "--worker-max-requests", "100" },
                                { "--worker-max-lua-memory", "64m" } }) do
            args[#args + 1] = helpers.fixture("lifecycle")
            local status, stderr = helpers.run_cli(args)
            assert.equal(2, status)
            assert.matches("^afcgi: " .. args[1]:gsub("%-", "%%-") .. " needs %-%-workers: a master "
                           .. "starts the replacement before the old worker goes %(a single "
                           .. "process has nobody to take over%)\n$", stderr)
        end
    end)

    it("refuse --worker-max-lua-memory at or above --lua-memory", function()
        local status, stderr = helpers.run_cli({ "--workers", "1", "--lua-memory", "64m",
            "--worker-max-lua-memory", "64m", helpers.fixture("lifecycle") })
        assert.equal(2, status)
        assert.matches("^afcgi: %-%-worker%-max%-lua%-memory %(67108864 bytes%) must be below "
                       .. "%-%-lua%-memory %(67108864 bytes%), which fails requests first\n$", stderr)
    end)
end)
