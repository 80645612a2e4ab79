-- Concurrency inside a handler: light threads, timers, ending early, abort
-- callbacks, per-request timeouts and logs, through the real server.
local helpers = require "helpers"
local fc = require "fcgi_client"
local socket = require "socket"

describe("concurrency inside a handler", function()
    local srv, c
    before_each(function()
        srv = helpers.start_server("tasks")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    it("spawns light threads and waits for whichever ends first, then the other", function()
        assert.equal("true b true 42 a", c:request(1, "/spawn").body)
    end)

    it("returns false and the error from wait when a thread raises", function()
        assert.equal("false thread failed", c:request(1, "/thread_error").body)
    end)

    it("logs the error of a thread nobody waited for once its request ends, only then", function()
        local mark = srv:mark()
        assert.equal("false thread failed", c:request(1, "/thread_error").body)
        assert.equal("done", c:request(2, "/lost_error").body)
        srv:wait_log("request 2 /lost_error: light thread error %(never waited for%).*nobody waits", 5, mark)
        assert.is_nil(srv:log():sub(mark + 1):find("thread failed", 1, true))
    end)

    it("kills a parked thread once; a second kill says not found", function()
        assert.equal("true nil not found", c:request(1, "/kill").body)
    end)

    it("lets threads write to the response in the order they run", function()
        assert.equal("321", c:request(1, "/threads_write").body)
    end)

    it("runs 10,000 concurrent requests of two light threads each", function()
        local n = 10000
        local srv2 = helpers.start_server("tasks", { args = { "--max-reqs", "20000",
                                                              "--max-conn-reqs", "20000" } })
        local c2 = helpers.connect(srv2)
        local t0 = socket.gettime()
        c2:cork()
        for id = 1, n do
            c2:begin(id); c2:params(id, fc.cgi_params("GET", "/two_threads?ms=200")); c2:stdin(id, "")
        end
        c2:uncork()
        for id = 1, n do assert.equal("3", c2:read_response(id, 30).body) end
        local took = socket.gettime() - t0
        print(("  10,000 requests x 2 light threads sleeping 0.2 s: %.2f s"):format(took))
        assert.is_true(took < 10, "threads of different requests did not overlap")
    end)

    it("runs timers once, periodically, and not after cancel", function()
        assert.equal("yes ticks>0 true", c:request(1, "/timer").body)
        assert.equal("true false", c:request(2, "/cancel").body)
    end)

    it("logs a timer's error with a traceback and goes on", function()
        assert.equal("still here", c:request(1, "/timer_error").body)
        srv:wait_log("timer error: .*timer boom", 5)
        srv:wait_log("stack traceback", 5)
    end)

    it("ends the handler early with res:exit, even inside pcall", function()
        local r = c:request(1, "/exit")
        assert.same({ 404, "404 Not Found\n", "1" }, { r.status, r.body, r.headers["x-before"] })
        local r2 = c:request(2, "/exit_body")
        assert.same({ 201, "made\n" }, { r2.status, r2.body })
        assert.equal(0, r2.app_status)
    end)

    it("replaces and removes headers with res:set_header", function()
        local r = c:request(1, "/set_header")
        assert.equal("3", r.headers["x-a"])
        assert.equal("text/html", r.headers["content-type"])
    end)

    it("runs the on_abort callback after ABORT_REQUEST and after a dropped connection", function()
        c:begin(1); c:params(1, fc.cgi_params("GET", "/on_abort?tag=one")); c:stdin(1, "")
        c:get_values({ "FCGI_MPXS_CONNS" })
        c:abort(1)
        c:read_response(1, 5)
        srv:wait_log("on_abort ran for one", 5)
        local gone = fc.connect(srv.addr)
        gone:begin(1); gone:params(1, fc.cgi_params("GET", "/on_abort?tag=two")); gone:stdin(1, "")
        gone:get_values({ "FCGI_MPXS_CONNS" })
        gone:close()
        srv:wait_log("on_abort ran for two", 5)
        assert.equal("true", c:request(2, "/aborted?tag=two").body)
    end)

    it("answers 504 when req:set_timeout passes", function()
        local t0 = socket.gettime()
        assert.equal(504, c:request(1, "/set_timeout").status)
        assert.is_true(socket.gettime() - t0 < 2)
    end)

    it("writes afcgi.log lines with the request's context", function()
        assert.equal("logged", c:request(1, "/log").body)
        srv:wait_log("%[warn%].*request 1 /log: hello from the handler 42 true", 5)
    end)
end)
