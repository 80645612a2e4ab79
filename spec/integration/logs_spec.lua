-- The access log, log reopening on SIGUSR1, the status page, and the limits
-- the server reports and enforces (FCGI_GET_VALUES, FCGI_OVERLOADED).
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local cjson = require "cjson"
local psignal = require "posix.signal"

-- access.h: "2026-11-22T04:30:00Z conn=3 req=1 gen=2 GET /hello?x=1 200 14 0.000210"
local LINE = "^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ) conn=(%d+) req=(%d+) gen=(%d+) (%S+) (%S+) "
          .. "(%d+) (%d+) (%-?%d+%.%d+)$"

local function parse_access(text)
    local out = {}
    for line in text:gmatch("[^\n]*\n") do
        line = line:sub(1, -2)
        local stamp, conn, req, gen, method, uri, status, bytes, secs = line:match(LINE)
        assert(stamp, "not an access log line: " .. line)
        out[#out + 1] = { line = line, stamp = stamp, conn = tonumber(conn), req = tonumber(req),
                          gen = tonumber(gen), method = method, uri = uri, status = tonumber(status),
                          bytes = tonumber(bytes), secs = tonumber(secs) }
    end
    return out
end

-- Waits until the access log at path has n lines; returns them parsed.
local function wait_lines(path, n, timeout)
    local lines
    helpers.wait_until(function()
        lines = parse_access(helpers.read_file(path))
        return #lines >= n
    end, timeout or 5, n .. " lines in " .. path)
    assert.equal(n, #lines, helpers.read_file(path))
    return lines
end

local function find_uri(lines, uri)
    for _, l in ipairs(lines) do if l.uri == uri then return l end end
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

describe("--access-log", function()
    after_each(helpers.cleanup)

    local dir, path
    before_each(function()
        dir = proc.tmpdir()
        path = dir .. "/access.log"
    end)

    it("writes one line per request: time, conn, req, gen, method, uri, status, bytes, seconds",
       function()
        local srv = helpers.start_server("lifecycle", { args = { "--access-log", path } })
        local c = helpers.connect(srv)
        local t0 = os.time()
        assert.equal(201, c:request(1, "/size?n=14&code=201").status)
        assert.equal("5", c:request(2, "/body", "hello").body)
        assert.equal(404, c:request(3, "/size?n=0&code=404").status)
        local r = c:request(4, "/sleep?ms=300")
        assert.equal(200, r.status)
        local c2 = helpers.connect(srv)
        assert.equal(200, c2:request(7, '/size?n=3&q=a"b%20c').status)
        local lines = wait_lines(path, 5)
        local expect = {
            { 1, "GET", "/size?n=14&code=201", 201, 14 },
            { 2, "POST", "/body", 200, 1 },
            { 3, "GET", "/size?n=0&code=404", 404, 0 },
            { 4, "GET", "/sleep?ms=300", 200, #r.body },
            { 7, "GET", "/size?n=3&q=a\\x22b%20c", 200, 3 },   -- a quote is escaped
        }
        for i, e in ipairs(expect) do
            local l = lines[i]
            assert.same(e, { l.req, l.method, l.uri, l.status, l.bytes }, l.line)
            assert.equal(1, l.gen, l.line)
            local y, mo, d, h, mi, s = l.stamp:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)Z")
            local t = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = s })
                + (os.time() - os.time(os.date("!*t")))           -- the stamp is UTC
            assert.is_true(math.abs(t - t0) <= 5, "time stamp " .. l.stamp)
        end
        assert.equal(lines[1].conn, lines[4].conn)
        assert.are_not.equal(lines[1].conn, lines[5].conn)
        assert.is_true(lines[4].secs >= 0.29 and lines[4].secs < 3, lines[4].line)
        -- after a reload the lines carry the new generation
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        srv:wait_log("generation 2 serves new requests", 5, mark)
        c:request(5, "/")
        assert.equal(2, wait_lines(path, 6)[6].gen)
    end)

    -- Found here: a request's start came from libevent's cached clock and its
    -- end from gettimeofday, and the cached clock runs ahead by up to a
    -- millisecond: one quick request in four logged a negative duration.
    it("never logs a negative duration", function()
        local srv = helpers.start_server("lifecycle", { args = { "--access-log", path } })
        local c = helpers.connect(srv)
        local n = helpers.asan and 100 or 400
        for id = 1, n do c:request(id, "/") end
        local negative = {}
        for _, l in ipairs(wait_lines(path, n)) do
            if l.secs < 0 then negative[#negative + 1] = l.line end
        end
        assert.equal(0, #negative, ("%d of %d lines, e.g.:\n%s"):format(#negative, n,
            table.concat(negative, "\n", 1, math.min(3, #negative))))
    end)

    it("logs 499 for a request the web server aborted", function()
        local srv = helpers.start_server("lifecycle", { args = { "--access-log", path } })
        local c = helpers.connect(srv)
        proc.send(c, 1, "/sleep?ms=60000")
        local sent = select(3, fc.parse_cgi(proc.wait_started(c, 1)))
        c:abort(1)
        assert.equal(fc.REQUEST_COMPLETE, c:read_response(1).protocol_status)
        local l = wait_lines(path, 1)[1]
        assert.same({ 1, "/sleep?ms=60000", 499, #sent }, { l.req, l.uri, l.status, l.bytes })
        assert.is_true(l.secs < 30)
    end)

    -- Found here: when the web server closed a connection with requests in
    -- flight, their 499 lines stayed buffered until some other answer went
    -- out, since the close does not use the flush queue.
    it("logs 499 for a request whose connection the web server closed, without more traffic",
       function()
        local srv = helpers.start_server("lifecycle", { args = { "--access-log", path,
                                                                 "--log-level", "info" } })
        local c = helpers.connect(srv)
        proc.send(c, 1, "/sleep?ms=60000")
        proc.wait_started(c, 1)
        c:close()
        srv:wait_log("closed by peer with 1 requests in flight", 5)
        local l = wait_lines(path, 1, 2)[1]
        assert.same({ 1, "/sleep?ms=60000", 499 }, { l.req, l.uri, l.status })
    end)

    -- Found here: a worker leaves through _exit, and left without writing
    -- those buffered lines at a graceful stop.
    it("keeps the 499 line of a dropped connection across a graceful stop of --workers", function()
        local srv = helpers.start_server("lifecycle", { args = { "--access-log", path,
                                                                 "--workers", "1",
                                                                 "--log-level", "info" } })
        local c = helpers.connect(srv)
        assert.equal(200, c:request(1, "/").status)
        local c2 = helpers.connect(srv)
        proc.send(c2, 1, "/sleep?ms=60000")
        proc.wait_started(c2, 1)
        c2:close()
        srv:wait_log("closed by peer with 1 requests in flight", 5)
        c:close()
        srv:stop_ok()
        local lines = parse_access(helpers.read_file(path))
        assert.is_not_nil(find_uri(lines, "/sleep?ms=60000"), "no 499 line; the log:\n"
                          .. helpers.read_file(path))
    end)
end)

describe("SIGUSR1", function()
    after_each(helpers.cleanup)

    for _, workers in ipairs({ 0, 2 }) do
        it(("reopens --error-log and --access-log after they were renamed%s"):format(
            workers > 0 and " (--workers 2: the master and every worker)" or ""), function()
            local dir = proc.tmpdir()
            local elog, alog = dir .. "/error.log", dir .. "/access.log"
            local args = { "--listen", "127.0.0.1:0", "--error-log", elog, "--access-log", alog,
                           "--shutdown-timeout", "3" }
            if workers > 0 then
                args[#args + 1] = "--workers"; args[#args + 1] = tostring(workers)
            end
            args[#args + 1] = helpers.fixture("lifecycle")
            local srv = helpers.start_afcgi(args, { ready_file = elog })
            assert.equal("", srv:log(), "stderr should be empty with --error-log")
            local pids = workers > 0 and proc.wait_children(srv.pid, workers) or { srv.pid }
            -- a connection to every process that serves
            local conns = {}
            for _ = 1, 200 do
                local c = helpers.connect(srv)
                local pid = tonumber(c:request(1, "/").body:match("^pid=(%d+)"))
                if not conns[pid] then conns[pid] = c else c:close() end
                local n = 0
                for _ in pairs(conns) do n = n + 1 end
                if n == #pids then break end
            end
            local id = 1
            local function tagged(pid, tag)
                id = id + 1
                assert.equal(200, conns[pid]:request(id, "/log?tag=" .. tag).status)
            end
            for _, pid in ipairs(pids) do assert.is_not_nil(conns[pid], "no connection to " .. pid) end
            for _, pid in ipairs(pids) do tagged(pid, "before-" .. pid) end
            assert.is_true(os.rename(elog, elog .. ".1"))
            assert.is_true(os.rename(alog, alog .. ".1"))
            -- until SIGUSR1, the renamed files get the lines (that is what logrotate expects)
            for _, pid in ipairs(pids) do tagged(pid, "between-" .. pid) end
            psignal.kill(srv.pid, psignal.SIGUSR1)
            for _, pid in ipairs(pids) do   -- each process reopens in its own time
                local k = 0
                helpers.wait_until(function()
                    k = k + 1
                    tagged(pid, "probe-" .. pid .. "-" .. k)
                    return helpers.read_file(elog):find("afcgi[" .. pid .. "]", 1, true)
                end, 5, "pid " .. pid .. " to log into the new " .. elog)
            end
            for _, pid in ipairs(pids) do tagged(pid, "after-" .. pid) end
            local mark = #helpers.read_file(elog)
            psignal.kill(srv.pid, psignal.SIGHUP)   -- the master logs this one itself
            helpers.wait_until(function()
                local _, n = helpers.read_file(elog):sub(mark + 1):gsub("serves new requests", "")
                return n == #pids
            end, 5, "the reload lines in the new " .. elog)
            local old_e, new_e = helpers.read_file(elog .. ".1"), helpers.read_file(elog)
            local old_a, new_a = helpers.read_file(alog .. ".1"), helpers.read_file(alog)
            for _, pid in ipairs(pids) do
                for _, tag in ipairs({ "before-", "between-" }) do
                    assert.matches("afcgi%[" .. pid .. "%]: [^\n]*fixture marker " .. escape(tag .. pid),
                                   old_e)
                    assert.is_nil(new_e:find("marker " .. tag .. pid .. "\n", 1, true))
                    assert.matches(" GET /log%?tag=" .. escape(tag .. pid) .. " 200 ", old_a)
                    assert.is_nil(new_a:find("tag=" .. tag .. pid .. " ", 1, true))
                end
                assert.matches("afcgi%[" .. pid .. "%]: [^\n]*fixture marker after%-" .. pid, new_e)
                assert.is_nil(old_e:find("marker after-" .. pid, 1, true))
                assert.matches(" GET /log%?tag=after%-" .. pid .. " 200 ", new_a)
                assert.is_nil(old_a:find("tag=after-" .. pid, 1, true))
                assert.matches("afcgi%[" .. pid .. "%]: reloaded ", new_e)
            end
            if workers > 0 then
                assert.matches("afcgi%[" .. srv.pid .. "%]: SIGHUP: reloading the app", new_e)
            end
            for _, c in pairs(conns) do c:close() end
            srv:stop_ok(nil, nil, function() return helpers.read_file(elog) end)
            assert.matches("afcgi%[" .. srv.pid .. "%]: exiting", helpers.read_file(elog))
        end)
    end
end)

describe("--status-path", function()
    after_each(helpers.cleanup)

    local function status(c, id, query)
        local r = c:request(id, "/status" .. (query or ""))
        assert.equal(200, r.status)
        assert.equal("no-store", r.headers["cache-control"])
        return r
    end

    it("answers JSON with the figures of a single process", function()
        local srv = helpers.start_server("lifecycle", { args = { "--status-path", "/status" } })
        local c = helpers.connect(srv)
        local others = { helpers.connect(srv), helpers.connect(srv) }
        for i, o in ipairs(others) do
            proc.send(o, i, "/sleep?ms=60000")
            proc.wait_started(o, i)
        end
        proc.send(c, 9, "/sleep?ms=60000")
        proc.wait_started(c, 9)
        local r = status(c, 1)
        assert.equal("application/json", r.headers["content-type"])
        local s = cjson.decode(r.body)
        assert.equal(3, s.connections)
        assert.equal(4, s.requests_in_flight)      -- three sleeping, and this one
        assert.equal(4, s.requests_total)
        assert.equal(1, #s.workers)
        local w = s.workers[1]
        assert.same({ srv.pid, 1, 3, 4, 4 },
                    { w.pid, w.generation, w.connections, w.requests_in_flight, w.requests_total })
        assert.is_true(math.abs(w.started - os.time()) < 60)
        -- only that path: a longer one goes to the app
        assert.matches("^pid=", c:request(2, "/status2").body)
        for i, o in ipairs(others) do o:abort(i); o:read_response(i) end
        c:abort(9); c:read_response(9)
        s = cjson.decode(status(c, 3).body)
        assert.same({ 3, 1, 6 }, { s.connections, s.requests_in_flight, s.requests_total })
    end)

    it("answers Prometheus text for ?prometheus, one process as worker 0", function()
        local srv = helpers.start_server("lifecycle", { args = { "--status-path", "/status" } })
        local c = helpers.connect(srv)
        local r = status(c, 1, "?prometheus")
        assert.equal("text/plain; version=0.0.4", r.headers["content-type"])
        local want = { afcgi_connections = { "gauge", 1 }, afcgi_requests_in_flight = { "gauge", 1 },
                       afcgi_requests_total = { "counter", 1 }, afcgi_code_generation = { "gauge", 1 } }
        local labels = '{worker="0",pid="' .. srv.pid .. '"}'
        for name, e in pairs(want) do
            assert.matches("# HELP " .. name .. " [^\n]+\n", r.body)
            assert.matches("# TYPE " .. name .. " " .. e[1] .. "\n", r.body)
            local v = r.body:match("\n" .. name .. labels:gsub("%p", "%%%0") .. " (%d+)\n")
            assert.equal(e[2], tonumber(v), name .. " in:\n" .. r.body)
        end
        -- a master's figures only under a master
        assert.is_nil(r.body:find("afcgi_worker_starts_total", 1, true))
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        srv:wait_log("generation 2 serves", 5, mark)
        assert.matches('\nafcgi_code_generation{worker="0",pid="' .. srv.pid .. '"} 2\n',
                       status(c, 2, "?prometheus").body)
    end)

    it("reports every worker of --workers 2", function()
        local srv = helpers.start_server("lifecycle", {
            args = { "--status-path", "/status", "--workers", "2" } })
        local kids = proc.wait_children(srv.pid, 2)
        local c = helpers.connect(srv)
        local mine = tonumber(c:request(1, "/").body:match("^pid=(%d+)"))
        proc.send(c, 2, "/sleep?ms=60000")
        proc.wait_started(c, 2)
        local s = cjson.decode(status(c, 3).body)
        assert.equal(2, #s.workers)
        local pids, rows = {}, {}
        for _, w in ipairs(s.workers) do pids[#pids + 1] = w.pid; rows[w.pid] = w end
        table.sort(pids)
        assert.same(kids, pids)
        -- the answering worker's own row is live
        assert.same({ 1, 2, 3 }, { rows[mine].connections, rows[mine].requests_in_flight,
                                   rows[mine].requests_total })
        assert.equal(s.requests_in_flight, rows[kids[1]].requests_in_flight
                                           + rows[kids[2]].requests_in_flight)
        -- after a reload every row shows generation 2
        psignal.kill(srv.pid, psignal.SIGHUP)
        helpers.wait_until(function()
            local _, n = srv:log():gsub("generation 2 serves", "")
            return n == 2
        end, 5, "both workers to reload")
        local id = 3
        helpers.wait_until(function()
            id = id + 1
            local now = cjson.decode(status(c, id).body)
            return #now.workers == 2 and now.workers[1].generation == 2
                and now.workers[2].generation == 2
        end, 5, "both workers to report generation 2")
        local p = status(c, id + 1, "?prometheus").body
        for _, k in ipairs(kids) do
            assert.matches('\nafcgi_code_generation{worker="%d",pid="' .. k .. '"} 2\n', p)
            assert.matches('\nafcgi_requests_total{worker="%d",pid="' .. k .. '"} %d+\n', p)
        end
        c:abort(2)
        c:read_response(2)
    end)
end)

describe("limits", function()
    after_each(helpers.cleanup)

    it("reports --max-conns and --max-reqs in FCGI_GET_VALUES", function()
        local srv = helpers.start_server("lifecycle", { args = { "--max-conns", "7", "--max-reqs", "13" } })
        local v = helpers.connect(srv):get_values({ "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS" })
        assert.same({ FCGI_MAX_CONNS = "7", FCGI_MAX_REQS = "13", FCGI_MPXS_CONNS = "1" }, v)
        srv = helpers.start_server("lifecycle", { args = { "--max-requests", "21" } })
        v = helpers.connect(srv):get_values({ "FCGI_MAX_CONNS", "FCGI_MAX_REQS" })
        assert.same({ FCGI_MAX_CONNS = "1024", FCGI_MAX_REQS = "21" }, v)
        -- HAProxy takes FCGI_MAX_REQS per connection: never above --max-conn-reqs
        srv = helpers.start_server("lifecycle", { args = { "--max-reqs", "500",
                                                            "--max-conn-reqs", "40" } })
        v = helpers.connect(srv):get_values({ "FCGI_MAX_REQS" })
        assert.same({ FCGI_MAX_REQS = "40" }, v)
    end)

    it("answers FCGI_OVERLOADED beyond --max-reqs, logs it, and serves again below it", function()
        local srv = helpers.start_server("lifecycle", { args = { "--max-reqs", "3" } })
        local c = helpers.connect(srv)
        for id = 1, 3 do
            proc.send(c, id, "/sleep?ms=60000")
            proc.wait_started(c, id)
        end
        local mark = srv:mark()
        proc.send(c, 4, "/")
        local r = c:read_response(4)
        assert.equal(fc.OVERLOADED, r.protocol_status)
        assert.equal("", r.stdout)
        srv:wait_log("conn %d+: request 4 refused: overloaded %(3 in flight, 3 on this connection%)", 5, mark)
        local other = helpers.connect(srv)             -- the limit is per process
        assert.equal(fc.OVERLOADED, other:request(1, "/").protocol_status)
        srv:wait_log("request 1 refused: overloaded %(3 in flight, 0 on this connection%)", 5, mark)
        c:abort(2)
        assert.equal(fc.REQUEST_COMPLETE, c:read_response(2).protocol_status)
        local ok = other:request(2, "/")
        assert.equal(fc.REQUEST_COMPLETE, ok.protocol_status)
        assert.equal(200, ok.status)
    end)

    it("answers FCGI_OVERLOADED beyond --max-conn-reqs on that connection only", function()
        local srv = helpers.start_server("lifecycle", { args = { "--max-conn-reqs", "2" } })
        local c = helpers.connect(srv)
        for id = 1, 2 do
            proc.send(c, id, "/sleep?ms=60000")
            proc.wait_started(c, id)
        end
        assert.equal(fc.OVERLOADED, c:request(3, "/").protocol_status)
        assert.equal(200, helpers.connect(srv):request(1, "/").status)
        c:abort(1)
        c:read_response(1)
        assert.equal(200, c:request(3, "/").status)
    end)
end)
