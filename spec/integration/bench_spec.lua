-- afcgi-bench's figures against a server whose answers are known: the
-- fixtures in spec/fixtures/app.lua (/echo, /sleep?ms=, /status, /big ...).
-- The tool is $AFCGI_BENCH, else ./afcgi-bench (make builds it with afcgi).
-- Nothing sleeps to synchronise: the waits poll pipes against deadlines.
local helpers = require "helpers"
local cjson = require "cjson"
local unistd = require "posix.unistd"
local psignal = require "posix.signal"

-- What a run of afcgi-bench said, for failure messages.
local function describe_run(b)
    return ("afcgi-bench %s\nstdout: %s\nstderr: %s"):format(table.concat(b.argv, " ", 2), b.out, b.text)
end

-- Starts afcgi-bench with args (helpers.spawn: stdout and stderr read as
-- they come, b.out and b.text); it is killed at cleanup if still running.
local function start_bench(args)
    local argv = { helpers.bench_bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local b = helpers.spawn(argv, { stdout = true })
    b.describe = describe_run
    helpers.defer(function() b:stop(psignal.SIGKILL, 2) end)
    return b
end

-- Waits for b's exit (reading all output); returns the exit status. Fails
-- after timeout seconds (default 5; the process is killed) or on a
-- sanitizer report.
local function finish(b, timeout)
    local ok, status = pcall(b.finish, b, timeout or 5)
    if not ok then error(tostring(status) .. "; " .. b:describe(), 2) end
    local bad = b.text:match("[^\n]*Sanitizer[^\n]*") or b.text:match("[^\n]*runtime error:[^\n]*")
    if bad then error("sanitizer report: " .. bad .. "; " .. b:describe(), 2) end
    return status
end

-- Runs afcgi-bench to completion: exit status, stdout, stderr.
local function run_bench(args, timeout)
    local b = start_bench(args)
    local status = finish(b, timeout)
    return status, b.out, b.text
end

-- Decodes the one-line JSON report of a finished run.
local function report_of(b)
    assert.matches("^{[^\n]*}\n$", b.out, 1, false, "not one JSON line; " .. b:describe())
    return cjson.decode(b.out)
end

-- Runs afcgi-bench --json ARGS against srv; returns the report and the exit status.
local function bench_json(srv, args, timeout)
    local argv = { "--json" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv[#argv + 1] = srv.addr
    local b = start_bench(argv)
    local status = finish(b, timeout)
    return report_of(b), status, b
end

local NO_ERRORS = { connect = 0, read = 0, protocol = 0, status = 0, body = 0, timeout = 0,
                    overloaded = 0 }

local function only_errors(kinds)
    local t = {}
    for k, v in pairs(NO_ERRORS) do t[k] = kinds[k] or v end
    return t
end

local function count(text, pattern)
    return select(2, text:gsub(pattern, ""))
end

describe("afcgi-bench", function()
    after_each(helpers.cleanup)

    describe("against /echo", function()
        local srv
        before_each(function() srv = helpers.start_server("app") end)

        it("completes exactly -n requests, all valid, none left in flight", function()
            local r, status, b = bench_json(srv, { "-n", "500", "-c", "4", "-m", "4",
                                                   "-u", "/echo" })
            assert.equal(0, status, b:describe())
            assert.same({ 500, 500, 0, 0, 0 },
                        { r.requests, r.ok, r.failed, r.in_flight, r.backlog })
            assert.same(NO_ERRORS, r.errors)
            assert.same({ 4, 4, "closed", true, "GET", "/echo" },
                        { r.connections, r.multiplex, r.mode, r.keep_conn, r.method, r.uri })
            local l = r.latency_us
            assert.is_true(l.min > 0 and l.min <= l.p50 and l.p50 <= l.p90 and l.p90 <= l.p99
                           and l.p99 <= l.p99_9 and l.p99_9 <= l.max, b.out)
            assert.is_true(l.mean >= l.min and l.mean <= l.max, b.out)
            assert.is_true(r.bytes_out > 500 * 16 and r.bytes_in > 500 * 16, b.out)
            assert.is_true(r.duration_s > 0 and r.rps > 0, b.out)
        end)

        it("sends -b bytes of body and checks --expect-body in it", function()
            local r, status, b = bench_json(srv, { "-n", "20", "-c", "2", "-u", "/echo",
                                                   "-b", "100k",
                                                   "--expect-body", "CONTENT_LENGTH=102400" })
            assert.equal(0, status, b:describe())
            assert.same({ 20, 20, "POST", 102400 }, { r.requests, r.ok, r.method, r.body_bytes })
            assert.is_true(r.bytes_out > 20 * 102400, b.out)
            assert.is_true(r.bytes_in > 20 * 102400, b.out)     -- echoed back
        end)

        it("counts every response without the --expect-body text as a 'body' error", function()
            local r, status, b = bench_json(srv, { "-n", "30", "-c", "3", "-u", "/echo",
                                                   "--expect-body", "not in any echo" })
            assert.equal(1, status, b:describe())
            assert.same({ 30, 0, 30 }, { r.requests, r.ok, r.failed })
            assert.same(only_errors({ body = 30 }), r.errors)
        end)
    end)

    describe("validation", function()
        local srv
        before_each(function() srv = helpers.start_server("app") end)

        it("counts a 404 as valid with --expect-status 404, as a 'status' error by default",
           function()
            local r, status, b = bench_json(srv, { "-n", "20", "-c", "2", "-u", "/no/such/route",
                                                   "--expect-status", "404" })
            assert.equal(0, status, b:describe())
            assert.same({ 20, 20, 0 }, { r.requests, r.ok, r.failed })
            assert.same(NO_ERRORS, r.errors)

            r, status, b = bench_json(srv, { "-n", "20", "-c", "2", "-u", "/no/such/route" })
            assert.equal(1, status, b:describe())
            assert.same({ 20, 0, 20 }, { r.requests, r.ok, r.failed })
            assert.same(only_errors({ status = 20 }), r.errors)
        end)

        it("reads the status from the Status header; --expect-status 0 takes any", function()
            local r, status, b = bench_json(srv, { "-n", "10", "-u", "/status?code=503",
                                                   "--expect-status", "503" })
            assert.equal(0, status, b:describe())
            assert.same({ 10, 10 }, { r.requests, r.ok })
            r, status, b = bench_json(srv, { "-n", "10", "-u", "/status?code=503",
                                             "--expect-status", "0" })
            assert.equal(0, status, b:describe())
            assert.same({ 10, 10 }, { r.requests, r.ok })
        end)

        it("finds --expect-body across STDOUT records", function()
            -- /big writes its 64-byte pattern in 7-byte flushed pieces: "89-_abcd"
            -- (bytes 61..68) starts in one record and ends in the next
            local uri = "/big?bytes=200&chunk=7&flush=1"
            local r, status, b = bench_json(srv, { "-n", "10", "-u", uri,
                                                   "--expect-body", "89-_abcd" })
            assert.equal(0, status, b:describe())
            assert.same({ 10, 10 }, { r.requests, r.ok })
            r, status, b = bench_json(srv, { "-n", "10", "-u", uri, "--expect-body", "89-_abcX" })
            assert.equal(1, status, b:describe())
            assert.same(only_errors({ body = 10 }), r.errors)
        end)
    end)

    describe("latency and concurrency", function()
        local srv
        before_each(function() srv = helpers.start_server("app") end)

        it("measures /sleep?ms=200 one at a time as 200 ms each", function()
            local r, status, b = bench_json(srv, { "-n", "3", "-c", "1", "-m", "1",
                                                   "-u", "/sleep?ms=200" })
            assert.equal(0, status, b:describe())
            assert.same({ 3, 3 }, { r.requests, r.ok })
            local l = r.latency_us
            assert.is_true(l.min >= 200000 and l.p50 >= 200000, b.out)
            assert.is_true(l.p50 < 1000000 and l.max < 1000000, b.out)
            assert.is_true(r.duration_s >= 0.6, b.out)             -- three in a row
        end)

        it("with -c 2 -m 8 has 16 requests in flight at once; the server counts each", function()
            local tag = "mpx" .. unistd.getpid()
            local r, status, b = bench_json(srv, { "-n", "16", "-c", "2", "-m", "8",
                                                   "-u", "/sleep?ms=1000&log=" .. tag })
            assert.equal(0, status, b:describe())
            assert.same({ 16, 16, 2, 8 }, { r.requests, r.ok, r.connections, r.multiplex })
            assert.is_true(r.latency_us.p50 >= 1000000, b.out)
            -- 2 rounds would take 2 s; 1 s of margin for a slow machine (valgrind)
            assert.is_true(r.duration_s < 2, "not all at once: " .. b.out)
            -- the handler logs before it answers: every line is there once the tool exited
            local done = count(srv:log(), "fixture sleep done tag=" .. tag .. " ")
            assert.equal(16, done)
        end)

        it("sends on schedule with -R", function()
            local r, status, b = bench_json(srv, { "-R", "100", "-d", "300ms", "-c", "4", "-m", "4",
                                                   "-u", "/echo" })
            assert.equal(0, status, b:describe())
            assert.equal("open", r.mode)
            local sent = r.requests + r.in_flight + r.backlog              -- 30 fall due in 0.3 s
            assert.is_true(sent >= 28 and sent <= 31,
                           "requests scheduled: " .. sent .. "; " .. b.out)
            assert.same(NO_ERRORS, r.errors)
        end)
    end)

    it("ranks fast and slow answers into their percentiles", function()
        -- --max-conn-reqs 1: of 3 requests sent at once on one connection, 2
        -- are answered OVERLOADED at once and 1 after its 300 ms sleep
        local srv = helpers.start_server("app", { args = { "--max-conn-reqs", "1" } })
        local r, status, b = bench_json(srv, { "-n", "3", "-c", "1", "-m", "3",
                                               "-u", "/sleep?ms=300" })
        assert.equal(1, status, b:describe())
        assert.same({ 3, 1, 2 }, { r.requests, r.ok, r.failed })
        assert.same(only_errors({ overloaded = 2 }), r.errors)
        local l = r.latency_us
        -- the 2nd of 3 is a fast one: well under the 300 ms sleep (valgrind
        -- takes ~110 ms for the first answers of a fresh server)
        assert.is_true(l.min < 200000 and l.p50 < 200000, b.out)
        assert.is_true(l.p90 >= 300000 and l.p90 <= l.max and l.max < 1000000, b.out)
        assert.is_true(l.mean >= l.max / 3 and l.mean < (l.max + 200000) / 3, b.out)
    end)

    it("with --no-keep-conn, completes -n requests on one connection each", function()
        local srv = helpers.start_server("app", { args = { "--log-level", "debug" } })
        local mark = srv:mark()
        local r, status, b = bench_json(srv, { "-n", "30", "-c", "3", "-m", "4", "--no-keep-conn",
                                               "-u", "/echo" })
        assert.equal(0, status, b:describe())
        assert.same({ 30, 30, 0, false, 1 },
                    { r.requests, r.ok, r.failed, r.keep_conn, r.multiplex })
        assert.same(NO_ERRORS, r.errors)
        -- one connection per request; a reconnect may race the last one and stay idle
        local accepted = count(srv:log():sub(mark + 1), "accepted from")
        assert.is_true(accepted >= 30 and accepted <= 32, "connections accepted: " .. accepted)
    end)

    it("works over a unix socket", function()
        local path = os.tmpname()
        os.remove(path)
        local srv = helpers.start_server("app", { listen = { "unix:" .. path } })
        helpers.defer(function() os.remove(path) end)
        local r, status, b = bench_json(srv, { "-n", "50", "-c", "2", "-m", "2", "-u", "/echo",
                                               "--expect-body", "REMOTE_ADDR=127.0.0.1" })
        assert.equal(0, status, b:describe())
        assert.same({ 50, 50 }, { r.requests, r.ok })
    end)

    it("--hold N keeps N requests in flight at the server until stopped", function()
        local srv = helpers.start_server("app", { args = { "--max-reqs", "200",
                                                           "--log-level", "info" } })
        local fds = helpers.fd_count(srv.pid)
        local mark = srv:mark()
        local hold = start_bench({ "--json", "--hold", "200", "-c", "4", "-u", "/sleep?ms=10000",
                                   srv.addr })
        hold:wait_log("^holding 200 requests\n", 5)
        helpers.wait_until(function() return helpers.fd_count(srv.pid) == fds + 4 end, 2,
                           "the server to hold 4 more connections")
        -- the server is at --max-reqs: one more request is answered OVERLOADED
        -- (retried until the server has read all 200 of the held ones)
        local extra
        helpers.wait_until(function()
            extra = bench_json(srv, { "-n", "1", "-c", "1", "-u", "/echo" })
            return extra.errors.overloaded == 1
        end, 3, "a request beyond --max-reqs to be answered OVERLOADED")
        assert.same({ 1, 0, 1 }, { extra.requests, extra.ok, extra.failed })

        psignal.kill(hold.pid, psignal.SIGINT)
        assert.equal(0, finish(hold, 5), hold:describe())
        assert.matches("stopped by signal 2", hold.text)
        local r = report_of(hold)
        assert.same({ "hold", 200, 200, 200, 0, 0 },
                    { r.mode, r.hold, r.held, r.in_flight, r.requests, r.failed })
        assert.same(NO_ERRORS, r.errors)
        local in_flight = 0
        helpers.wait_until(function()
            in_flight = 0
            local log = srv:log():sub(mark + 1)
            for n in log:gmatch("closed by peer with (%d+) requests in flight") do
                in_flight = in_flight + tonumber(n)
            end
            return in_flight >= 200
        end, 3, "the server to log the held requests as aborted")
        assert.equal(200, in_flight)
    end)

    describe("command line", function()
        -- One line "afcgi-bench: <message>" on stderr, nothing on stdout, exit 2.
        local function assert_fails(args, pattern)
            local status, out, err = run_bench(args)
            local what = "afcgi-bench " .. table.concat(args, " ")
            assert.equal(2, status, what .. ": " .. err)
            assert.matches("^afcgi%-bench: [^\n]+\n$", err, 1, false, what .. ": not one line")
            assert.equal("", out, what .. " wrote to stdout")
            if pattern then assert.matches(pattern, err) end
        end

        it("rejects bad options and values with one line and exit 2", function()
            assert_fails({ "--bogus", "127.0.0.1:9" }, "unknown option '%-%-bogus'")
            assert_fails({ "-c", "0", "127.0.0.1:9" }, "%-c: expected an integer")
            assert_fails({ "-d", "5q", "127.0.0.1:9" }, "%-d: expected a time")
            assert_fails({ "--hold", "5", "-n", "5", "127.0.0.1:9" }, "cannot be combined")
            assert_fails({ "-n", "5", "nohostport" }, "nohostport")
            assert_fails({ "-n", "5" }, "missing TARGET")
            assert_fails({ "127.0.0.1:9", "-c" }, "needs a value")
        end)

        it("prints usage with --help and exits 0", function()
            local status, out = run_bench({ "--help" })
            assert.equal(0, status)
            assert.matches("^usage: afcgi%-bench", out)
            assert.matches("%-%-expect%-status", out)
        end)
    end)
end)
