-- The command line, the readiness line and the signals (README.md, "Command line").
local helpers = require "helpers"
local fc = require "fcgi_client"
local socket = require "socket"
local psignal = require "posix.signal"

-- One line "afcgi: <message>" on stderr and exit status 2.
local function assert_fails(args, message_pattern)
    local status, stderr, stdout = helpers.run_cli(args)
    local what = "afcgi " .. table.concat(args, " ")
    assert.equal(2, status, what .. " exit status; stderr: " .. stderr)
    assert.matches("^afcgi: [^\n]+\n$", stderr, 1, false, what .. ": not one 'afcgi: ' line")
    if message_pattern then assert.matches(message_pattern, stderr) end
    assert.equal("", stdout, what .. " wrote to stdout")
    return stderr
end

local function echo_body(r) return select(2, helpers.parse_echo(r.body)) end

describe("afcgi command line", function()
    after_each(helpers.cleanup)

    it("prints usage and exits 0 with --help and -h", function()
        for _, flag in ipairs({ "--help", "-h" }) do
            local status, stderr, stdout = helpers.run_cli({ flag })
            assert.equal(0, status, flag .. ": " .. stderr)
            assert.matches("usage: afcgi", stdout .. stderr)
            assert.matches("%-%-max%-conn%-reqs", stdout .. stderr)
        end
    end)

    it("prints the version and exits 0 with --version and -V", function()
        for _, flag in ipairs({ "--version", "-V" }) do
            local status, stderr, stdout = helpers.run_cli({ flag })
            assert.equal(0, status, flag .. ": " .. stderr)
            assert.matches("0%.1%.0", stdout .. stderr)
        end
    end)

    it("rejects an unknown option with one line and exit 2", function()
        assert_fails({ "--bogus", helpers.fixture("echo") }, "bogus")
    end)

    it("rejects bad option values with one line and exit 2", function()
        local app = helpers.fixture("echo")
        assert_fails({ "--max-conns", "many", app })
        assert_fails({ "--max-body", "12q", app })
        assert_fails({ "--log-level", "loud", app })
        assert_fails({ "--listen", "nohostport", app })
        assert_fails({ app, "--listen" })
    end)

    it("fails with exit 2 without a script argument", function()
        assert_fails({})
    end)

    it("names a missing script in its one-line error", function()
        assert_fails({ "/nonexistent/dir/app.lua" }, "/nonexistent/dir/app%.lua")
    end)

    it("reports a syntax error with file:line and exits 2", function()
        assert_fails({ helpers.fixture("syntax_error") }, "syntax_error%.lua:4:")
    end)

    it("reports an error raised while loading with file:line and exits 2", function()
        assert_fails({ helpers.fixture("load_error") }, "load_error%.lua:3: fixture refuses to load")
    end)

    it("fails with exit 2 when the script returns no handler", function()
        assert_fails({ helpers.fixture("not_handler") }, "not_handler%.lua")
    end)

    it("fails with one line and exit 2 when the address is in use", function()
        local taken = assert(socket.bind("127.0.0.1", 0))
        helpers.defer(function() taken:close() end)
        local port = select(2, taken:getsockname())
        assert_fails({ "--listen", "127.0.0.1:" .. port, helpers.fixture("echo") }, tostring(port))
    end)
end)

describe("afcgi readiness line", function()
    after_each(helpers.cleanup)

    it("is logged once, in the log format, with the port picked for port 0", function()
        local srv = helpers.start_server("echo")
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ %[notice%] afcgi%["
                       .. srv.pid .. "%]: ready, listening on 127%.0%.0%.1:%d+$", srv.ready_line)
        assert.is_true(srv.port > 0)
        local c = helpers.connect(srv)
        assert.equal("x", echo_body(c:request(1, "/", "x")))
        local _, count = srv:log():gsub("ready, listening on", "")
        assert.equal(1, count)
    end)

    it("lists every listener, TCP v4, v6 and unix, and each one serves", function()
        local path = os.tmpname()
        os.remove(path)
        helpers.defer(function() os.remove(path) end)
        local srv = helpers.start_server("echo", {
            listen = { "127.0.0.1:0", "[::1]:0", "unix:" .. path } })
        assert.equal(3, #srv.addrs)
        assert.matches("^127%.0%.0%.1:%d+$", srv.addrs[1])
        assert.matches("^%[::1%]:%d+$", srv.addrs[2])
        assert.equal("unix:" .. path, srv.addrs[3])
        assert.not_equal("0", srv.addrs[2]:match(":(%d+)$"))
        for i, addr in ipairs(srv.addrs) do
            local c = helpers.connect(srv, addr)
            assert.equal("via " .. addr, echo_body(c:request(i, "/", "via " .. addr)))
        end
    end)
end)

describe("afcgi signals", function()
    after_each(helpers.cleanup)

    -- Starts a request that waits for its body; returns once the server has
    -- read its BEGIN and PARAMS (a GET_VALUES round trip on the same
    -- connection comes after them).
    local function request_in_flight(srv, id)
        local c = helpers.connect(srv)
        c:begin(id)
        c:params(id, fc.cgi_params("POST", "/echo"))
        c:get_values({ "FCGI_MPXS_CONNS" })
        return c
    end

    it("lets a request in flight finish on SIGTERM, then exits 0", function()
        local srv = helpers.start_server("echo")
        local c = request_in_flight(srv, 1)
        assert(psignal.kill(srv.pid, psignal.SIGTERM))
        c:stdin(1, "finish me")
        c:stdin(1, "")
        local r = c:read_response(1)
        assert.equal("finish me", echo_body(r))
        c:close()
        assert.equal(0, srv:stop_ok(false, 8))              -- no second signal
    end)

    it("exits 0 after --shutdown-timeout when a request never finishes", function()
        local srv = helpers.start_server("echo", { args = { "--shutdown-timeout", "1" } })
        request_in_flight(srv, 1)
        local t0 = socket.gettime()
        assert(psignal.kill(srv.pid, psignal.SIGTERM))
        assert.equal(0, srv:stop_ok(false, 8))
        local took = socket.gettime() - t0
        assert.is_true(took >= 0.9 and took < 5, ("stopped after %.2f s"):format(took))
    end)

    it("exits at once on SIGQUIT with a request in flight", function()
        local srv = helpers.start_server("echo", { manual = true })
        helpers.defer(function() srv:stop(psignal.SIGKILL) end)
        request_in_flight(srv, 1)
        local t0 = socket.gettime()
        srv:stop(psignal.SIGQUIT, 5)
        assert.is_true(socket.gettime() - t0 < 2)
        assert.not_equal("timeout", srv.how)
    end)
end)
