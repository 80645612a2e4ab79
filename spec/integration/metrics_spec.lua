-- --status-path's figures against the real binary: exact counts right after
-- a known load (merged over two workers, no lag), ?full's requests in
-- flight with what each waits on, the master's worker starts and exits,
-- reloads, refusals, the keepalive pools; Prometheus text checked by
-- promtool (spec/support/prom.lua) and read back strictly.
local cjson = require "cjson"
local helpers = require "helpers"
local proc = require "proc"
local prom = require "prom"
local fc = require "fcgi_client"
local psignal = require "posix.signal"
local unistd = require "posix.unistd"
local socket = require "socket"

-- Requests sent and answers read on fcgi_client connections, in bytes, as
-- the server reads and writes them (it pads nothing).
local Tally = {}
Tally.__index = Tally

local function tally() return setmetatable({ sent = 0, recvd = 0 }, Tally) end

function Tally:request(c, id, uri, opts)
    local params = fc.cgi_params("GET", uri)
    self.sent = self.sent + #fc.begin_record(id, opts) + #fc.params_records(id, params)
        + #fc.stdin_records(id, "")
    local r = c:request(id, params, nil, opts)
    self.recvd = self.recvd + 8 * r.stdout_records + #r.stdout + 8 + 16
    return r
end

local function start(args, opts)
    local srv = helpers.start_server("metrics", { args = args, env = opts and opts.env })
    return srv
end

local function sum(fams, name, labels) return prom.sum(fams, name, labels) end

describe("--status-path figures", function()
    after_each(helpers.cleanup)

    it("--workers 2: exact right after a known load, merged over the workers", function()
        local srv = start({ "--workers", "2", "--status-path", "/status" })
        local t = tally()
        -- 4 keepalive connections: 5 x 200, 2 x 404, 1 handler error each
        local keep = {}
        for k = 1, 4 do
            local c = helpers.connect(srv)
            keep[k] = c
            for i = 1, 5 do assert.equal(200, t:request(c, i, "/").status) end
            for i = 6, 7 do assert.equal(404, t:request(c, i, "/code?c=404").status) end
            assert.equal(500, t:request(c, 8, "/fail").status)
        end
        -- 6 connections of one request each, closed by afcgi after the answer
        for _ = 1, 6 do
            local c = helpers.connect(srv)
            assert.equal(302, t:request(c, 1, "/code?c=302", { keep_conn = false }).status)
            assert.is_true(c:closed_by_peer(10))
        end
        -- 2 requests at once on one connection (it has multiplexed), in
        -- flight while the figures are taken: each has sent its first part
        local mpx = helpers.connect(srv)
        local params = fc.cgi_params("GET", "/nap")
        for id = 1, 2 do
            proc.send(mpx, id, "/nap")
            t.sent = t.sent + #fc.begin_record(id) + #fc.params_records(id, params)
                + #fc.stdin_records(id, "")
        end
        for id = 1, 2 do t.recvd = t.recvd + 8 + #proc.wait_started(mpx, id) end

        -- at once, on a new connection, whichever worker takes it
        local c = helpers.connect(srv)
        local sparams = fc.cgi_params("GET", "/status?prometheus")
        t.sent = t.sent + #fc.begin_record(1) + #fc.params_records(1, sparams) + #fc.stdin_records(1, "")
        local r = c:request(1, sparams)
        assert.equal(200, r.status)
        assert.equal("text/plain; version=0.0.4", r.headers["content-type"])
        prom.check(r.body)
        local m = prom.parse(r.body)
        local answered = 20 + 8 + 4 + 6
        assert.same({ 20, 8, 4, 6 }, { sum(m, "afcgi_responses_total", { code = 200 }),
            sum(m, "afcgi_responses_total", { code = 404 }), sum(m, "afcgi_responses_total", { code = 500 }),
            sum(m, "afcgi_responses_total", { code = 302 }) })
        assert.same({ 0, 20, 6, 8, 4 }, { sum(m, "afcgi_responses_by_class_total", { class = "1xx" }),
            sum(m, "afcgi_responses_by_class_total", { class = "2xx" }),
            sum(m, "afcgi_responses_by_class_total", { class = "3xx" }),
            sum(m, "afcgi_responses_by_class_total", { class = "4xx" }),
            sum(m, "afcgi_responses_by_class_total", { class = "5xx" }) })
        assert.equal(answered + 3, sum(m, "afcgi_requests_total"))   -- the naps, and this one
        assert.equal(3, sum(m, "afcgi_requests_in_flight"))
        assert.equal(answered - 4, sum(m, "afcgi_requests_ended_total", { how = "answered" }))
        assert.equal(4, sum(m, "afcgi_requests_ended_total", { how = "failed" }))
        assert.equal(0, sum(m, "afcgi_requests_ended_total", { how = "aborted" }))
        assert.equal(4, sum(m, "afcgi_lua_errors_total", { where = "handler" }))
        assert.equal(answered, sum(m, "afcgi_request_duration_seconds_count"))
        assert.equal(answered, sum(m, "afcgi_request_duration_seconds_bucket", { le = "+Inf" }))
        assert.is_true(sum(m, "afcgi_request_duration_seconds_sum") > 0)
        -- connections: 4 + 6 + 1 + this one; open: all but the 6
        assert.equal(12, sum(m, "afcgi_connections_total"))
        assert.equal(6, sum(m, "afcgi_connections"))
        assert.equal(1, sum(m, "afcgi_connections_multiplexed"))
        -- records: BEGIN, 2 PARAMS, 1 STDIN each; answers: 2 STDOUT and
        -- END_REQUEST each, and the naps' first STDOUT
        local typ = function(x) return { type = x } end
        local begun = answered + 3
        -- (afcgi stops decoding a connection it closes: the one-shot ones'
        -- empty STDIN, read with their answer already done, is not decoded)
        assert.same({ begun, 2 * begun, begun - 6 },
                    { sum(m, "afcgi_fcgi_records_received_total", typ("BEGIN_REQUEST")),
                      sum(m, "afcgi_fcgi_records_received_total", typ("PARAMS")),
                      sum(m, "afcgi_fcgi_records_received_total", typ("STDIN")) })
        assert.same({ 2 * answered + 2, answered },
                    { sum(m, "afcgi_fcgi_records_sent_total", typ("STDOUT")),
                      sum(m, "afcgi_fcgi_records_sent_total", typ("END_REQUEST")) })
        -- bytes, to the byte: all this spec sent, and all it read back
        assert.equal(t.sent, sum(m, "afcgi_received_bytes_total"))
        assert.equal(t.recvd, sum(m, "afcgi_sent_bytes_total"))
        -- every series per worker, both workers there
        local pids = {}
        for _, s in ipairs(prom.samples(m, "afcgi_requests_total")) do
            pids[#pids + 1] = tonumber(s.labels.pid)
            assert.matches("^[12]$", s.labels.worker)
        end
        table.sort(pids)
        assert.same(proc.children(srv.pid), pids)
        assert.equal(2, sum(m, "afcgi_worker_up"))
        assert.equal(2, sum(m, "afcgi_worker_starts_total"))
        for _, s in ipairs(prom.samples(m, "afcgi_lua_memory_bytes")) do
            assert.equal("1", s.labels.generation)
            assert.is_true(s.value > 10000, "a Lua state holds more than that")
        end
        assert.equal(2, #prom.samples(m, "afcgi_lua_memory_bytes"))

        -- the JSON says the same totals
        local j = cjson.decode(c:request(2, "/status").body)
        assert.same({ answered + 4, 3, 6 }, { j.requests_total, j.requests_in_flight, j.connections })
        local twoxx, failed = 0, 0
        for _, w in ipairs(j.workers) do
            twoxx, failed = twoxx + w.responses["2xx"], failed + w.ended.failed
            assert.is_true(w.answered)
            assert.equal(1, #w.lua_memory)
        end
        assert.same({ 21, 4 }, { twoxx, failed })  -- the Prometheus answer is a 200 too
        mpx:abort(1)
        mpx:abort(2)
        mpx:read_response(1)
        mpx:read_response(2)
        for _, k in ipairs(keep) do k:close() end
    end)

    it("?full lists every request in flight per worker with what it waits on", function()
        local srv = start({ "--workers", "2", "--status-path", "/status" })
        local lfd, port = proc.tcp_listener()   -- accepts into its backlog, never answers
        helpers.defer(function() unistd.close(lfd) end)
        local a, b = helpers.connect(srv), helpers.connect(srv)
        proc.send(a, 7, "/hold?port=" .. port)
        proc.send(b, 9, "/nap?ms=60000")
        local odd = '/nap?ms=60000&q=a"b\\c\1\255'   -- JSON must escape these
        proc.send(b, 10, odd)
        local pid_a = tonumber(proc.wait_started(a, 7):match("pid=(%d+)"))
        local pid_b = tonumber(proc.wait_started(b, 9):match("pid=(%d+)"))
        proc.wait_started(b, 10)
        local c = helpers.connect(srv)
        local r = c:request(1, "/status?full")
        assert.equal("application/json", r.headers["content-type"])
        local j = cjson.decode(r.body)
        local found = {}
        for _, w in ipairs(j.workers) do
            assert.is_true(w.answered)
            assert.equal(0, w.requests_unlisted)
            for _, q in ipairs(w.requests) do found[q.uri] = { w = w, q = q } end
        end
        local hold = assert(found["/hold?port=" .. port], "the held request is listed: " .. r.body)
        assert.equal(pid_a, hold.w.pid)
        assert.same({ 7, "GET", "handler", 1 }, { hold.q.id, hold.q.method, hold.q.state, hold.q.generation })
        assert.equal("a socket read (127.0.0.1:" .. port .. ")", hold.q.wait)
        assert.equal(1, #hold.q.threads)
        assert.matches("^afcgi%.sleep, [%d.e+]+ s left$", hold.q.threads[1].wait)
        assert.is_true(hold.q.age >= 0 and hold.q.age < 60)
        local nap = assert(found["/nap?ms=60000"], "the napping request is listed: " .. r.body)
        assert.equal(pid_b, nap.w.pid)
        local left = tonumber(nap.q.wait:match("^afcgi%.sleep, ([%d.e+]+) s left$"))
        assert.is_true(left ~= nil and left > 0 and left <= 60, nap.q.wait)
        assert.same({}, nap.q.threads)
        assert.is_number(found["/status?full"].q.id)   -- and the status request itself
        -- bytes outside printable ASCII come as \u00XX: Latin-1, so 255 reads back as U+00FF
        local back = odd:gsub("\255", "\195\191")
        assert.equal(10, assert(found[back], "the odd URI, escaped and read back: " .. r.body).q.id)
        -- gone once aborted, at once
        a:abort(7)
        b:abort(9)
        b:abort(10)
        a:read_response(7)
        b:read_response(9)
        b:read_response(10)
        j = cjson.decode(c:request(2, "/status?full").body)
        assert.equal(1, j.requests_in_flight)
        local aborted = 0
        for _, w in ipairs(j.workers) do aborted = aborted + w.ended.aborted end
        assert.equal(3, aborted)
        -- without ?full, no list
        for _, w in ipairs(cjson.decode(c:request(3, "/status").body).workers) do
            assert.is_nil(w.requests)
        end
    end)

    it("the master counts each worker's starts and exits by cause; reloads ok and failed", function()
        local dir = proc.tmpdir()
        local app = dir .. "/app.lua"
        proc.write_file(app, helpers.read_file(helpers.fixture("metrics")))
        local srv = helpers.start_server(app, { args = { "--workers", "2", "--status-path", "/status" } })
        local kids = proc.wait_children(srv.pid, 2)
        local c = helpers.connect(srv)
        local victim = assert(tonumber(c:request(1, "/").body:match("^pid=(%d+)$")))
        psignal.kill(victim, psignal.SIGKILL)
        srv:wait_log("killed by signal 9", 10)
        local m
        helpers.wait_until(function()
            local ok, fams = pcall(prom.scrape, helpers.connect(srv), 1)
            m = ok and fams
            return m and sum(m, "afcgi_worker_up") == 2
        end, 20, "the killed worker to be back")
        local slot
        for _, s in ipairs(prom.samples(m, "afcgi_worker_exits_total")) do
            assert.same({ "signal", "9", 1 }, { s.labels.cause, s.labels.code, s.value })
            slot = s.labels.worker
        end
        assert(slot, "one exit counted")
        assert.equal(2, sum(m, "afcgi_worker_starts_total", { worker = slot }))
        assert.equal(3, sum(m, "afcgi_worker_starts_total"))
        local newpid = tonumber(prom.samples(m, "afcgi_requests_total", { worker = slot })[1].labels.pid)
        assert.is_true(newpid ~= kids[1] and newpid ~= kids[2] and newpid ~= victim)

        -- a reload that works, then one that fails (the file no longer compiles)
        local mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        helpers.wait_until(function()
            local _, n = srv:log():sub(mark + 1):gsub("generation 2 serves", "")
            return n == 2
        end, 20, "both workers to reload")
        proc.write_file(app, "return function(req, res) this is not Lua end\n")
        mark = srv:mark()
        psignal.kill(srv.pid, psignal.SIGHUP)
        helpers.wait_until(function()
            local _, n = srv:log():sub(mark + 1):gsub("reload failed", "")
            return n == 2
        end, 20, "both workers to fail their reload")
        m = prom.scrape(helpers.connect(srv), 1)
        assert.equal(2, sum(m, "afcgi_reloads_total", { result = "ok" }))
        assert.equal(2, sum(m, "afcgi_reloads_total", { result = "failed" }))
        for _, s in ipairs(prom.samples(m, "afcgi_code_generation")) do assert.equal(2, s.value) end
    end)

    it("a recycled worker keeps its number: one up, two starts, one clean exit", function()
        local srv = start({ "--workers", "1", "--worker-max-requests", "3", "--status-path", "/status" })
        local first = proc.wait_children(srv.pid, 1)[1]
        local mark = srv:mark()
        local c = helpers.connect(srv)
        for i = 1, 3 do assert.equal(200, c:request(i, "/").status) end
        srv:wait_log("worker 1 %(pid " .. first .. "%) retired%s*$", 30, mark)
        local m = prom.scrape(helpers.connect(srv), 1)
        assert.same({ 1 }, { sum(m, "afcgi_worker_up") })
        assert.equal(1, sum(m, "afcgi_worker_up", { worker = "1" }))
        assert.equal(2, sum(m, "afcgi_worker_starts_total", { worker = "1" }))
        assert.equal(1, sum(m, "afcgi_worker_exits_total", { worker = "1", cause = "exit", code = "0" }))
        local rows = prom.samples(m, "afcgi_requests_total")
        assert.equal(1, #rows)
        assert.equal("1", rows[1].labels.worker)
        assert.is_true(tonumber(rows[1].labels.pid) ~= first)
        local j = cjson.decode(helpers.connect(srv):request(1, "/status").body)
        assert.equal(1, #j.workers)
        assert.equal(1, j.workers[1].worker)
    end)

    it("does not wait for a worker that has stopped answering while it frees its app", function()
        -- the app's state takes 3 s to close (a finaliser): the old worker,
        -- retired, spends that long after its loop before it exits
        local app = proc.tmpdir() .. "/app.lua"
        proc.write_file(app, ([[
local ffi = require "ffi"
ffi.cdef "int poll(void *fds, unsigned long nfds, int timeout);"
local slow = newproxy(true)
getmetatable(slow).__gc = function() ffi.C.poll(nil, 0, 3000) end
local handler = dofile(%q)
return function(req, res) local _ = slow; return handler(req, res) end
]]):format(helpers.fixture("lifecycle")))
        local srv = helpers.start_server(app, { args = { "--workers", "1",
            "--worker-max-requests", "1", "--status-path", "/status" } })
        local old = proc.wait_children(srv.pid, 1)[1]
        local mark = srv:mark()
        local c = helpers.connect(srv)
        assert.equal(200, c:request(1, "/").status)       -- asks for a replacement
        c:close()                                           -- it has nothing left: it goes
        srv:wait_log("afcgi%[" .. old .. "%]: worker 1 retiring: its replacement serves", 30, mark)
        local t0 = socket.gettime()
        local r = helpers.connect(srv):request(1, "/status")
        local took = socket.gettime() - t0
        assert.is_true(proc.running(old), "the old worker is still freeing its app")
        assert.equal(200, r.status)
        for _, w in ipairs(cjson.decode(r.body).workers) do assert.not_equal(old, w.pid) end
        assert.is_true(took < 1.5, ("the answer took %.3f s"):format(took))
        assert.equal(0, #srv:lines("did not send their figures", mark))
    end)

    it("counts refusals: FCGI_OVERLOADED, FCGI_UNKNOWN_ROLE, 431, bodies over --max-body", function()
        local srv = start({ "--status-path", "/status", "--max-conn-reqs", "2", "--max-params", "1k",
                            "--max-body", "1k" })
        local c = helpers.connect(srv)
        proc.send(c, 1, "/nap")
        proc.send(c, 2, "/nap")
        proc.wait_started(c, 1)
        proc.wait_started(c, 2)
        proc.send(c, 3, "/")
        local over = c:read_matching(function(rec) return rec.id == 3 and rec.type == fc.END_REQUEST end)
        assert.equal(fc.OVERLOADED, over.protocol_status)
        local d = helpers.connect(srv)
        assert.equal(431, d:request(1, fc.cgi_params("GET", "/", { X = ("x"):rep(2048) })).status)
        assert.equal("too large", d:request(2, "/body", ("b"):rep(4096)).body)
        d:begin(3, { role = fc.AUTHORIZER })
        local role = d:read_matching(function(rec) return rec.id == 3 and rec.type == fc.END_REQUEST end)
        assert.equal(fc.UNKNOWN_ROLE, role.protocol_status)
        d:send_raw(fc.record(42, 0, "12345678"))
        d:read_matching(function(rec) return rec.type == fc.UNKNOWN_TYPE end)
        c:abort(1)
        c:abort(2)
        c:read_response(1)
        c:read_response(2)
        local m = prom.scrape(d, 4)
        assert.same({ 1, 1, 1, 1 }, { sum(m, "afcgi_rejected_total", { reason = "overloaded" }),
            sum(m, "afcgi_rejected_total", { reason = "unknown_role" }),
            sum(m, "afcgi_rejected_total", { reason = "params_too_large" }),
            sum(m, "afcgi_rejected_total", { reason = "body_too_large" }) })
        assert.equal(2, sum(m, "afcgi_requests_ended_total", { how = "aborted" }))
        assert.equal(1, sum(m, "afcgi_fcgi_records_received_total", { type = "OTHER" }))
        assert.equal(2, sum(m, "afcgi_fcgi_records_received_total", { type = "ABORT_REQUEST" }))
        assert.equal(1, sum(m, "afcgi_fcgi_records_sent_total", { type = "UNKNOWN_TYPE" }))
        -- the aborted ones answered nothing but END_REQUEST; the access log would say 499
        assert.equal(2, sum(m, "afcgi_responses_total", { code = 499 }))
        assert.equal(1, sum(m, "afcgi_responses_total", { code = 431 }))
    end)

    it("counts the keepalive pools: a new connection, a reused one, one idle", function()
        local redis = helpers.start_redis()
        local srv = start({ "--status-path", "/status" })
        local c = helpers.connect(srv)
        for i = 1, 3 do assert.equal("+PONG", c:request(i, "/ping?port=" .. redis.port).body) end
        local m = prom.scrape(c, 4)
        assert.equal(1, sum(m, "afcgi_socket_connects_total"))
        assert.equal(2, sum(m, "afcgi_socket_pool_reused_total"))
        assert.equal(1, sum(m, "afcgi_socket_pool_idle"))
    end)
end)
