-- FastCGI 1.0 protocol behaviour of afcgi (README.md, "How it works").
local helpers = require "helpers"
local fc = require "fcgi_client"
local socket = require "socket"

local function start(args) return helpers.start_server("app", { args = args }) end

local function echo_body(r) return select(2, helpers.parse_echo(r.body)) end

-- A fresh connection to srv gets a whole echo response.
local function assert_serving(srv)
    local c = helpers.connect(srv)
    local r = c:request(1, "/echo?still=serving", "alive")
    assert.equal(200, r.status)
    assert.equal("alive", echo_body(r))
    c:close()
end

-- Opens a connection with an echo request in flight (waiting for its body).
local function other_in_flight(srv)
    local c = helpers.connect(srv)
    c:begin(1)
    c:params(1, fc.cgi_params("POST", "/echo?other=1"))
    c:get_values({ "FCGI_MPXS_CONNS" })   -- answered after BEGIN and PARAMS were read
    return c
end

-- Sends prelude, then bad, on a new connection while another connection has
-- a request in flight: the bad connection must be closed by the server, the
-- other request must still complete, and new connections must be served.
local function assert_protocol_error(srv, bad, prelude)
    local other = other_in_flight(srv)
    local c = helpers.connect(srv)
    if prelude then c:send_raw(prelude) end
    local ok, err = pcall(c.send_raw, c, bad)       -- the server may close mid-send
    assert(ok or tostring(err):find("send failed"), err)
    assert.is_true(c:closed_by_peer(5), "the server kept the connection open")
    for _, rec in ipairs(c.pending) do
        assert.is_not.equal(fc.STDOUT, rec.type, "the bad connection got output: " .. rec.content)
    end
    other:stdin(1, "other survives")
    other:stdin(1, "")
    assert.equal("other survives", echo_body(other:read_response(1)))
    assert_serving(srv)
end

describe("FastCGI management records", function()
    after_each(helpers.cleanup)

    it("answers FCGI_GET_VALUES with the configured limits", function()
        local srv = start({ "--max-conns", "77", "--max-reqs", "555" })
        local c = helpers.connect(srv)
        local values, rec = c:get_values({ "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS" })
        assert.same({ FCGI_MAX_CONNS = "77", FCGI_MAX_REQS = "555", FCGI_MPXS_CONNS = "1" }, values)
        assert.same({ fc.GET_VALUES_RESULT, 0, 1 }, { rec.type, rec.id, rec.version })
    end)

    it("answers FCGI_GET_VALUES with only the names asked for", function()
        local srv = start()
        local c = helpers.connect(srv)
        assert.same({ FCGI_MPXS_CONNS = "1" }, c:get_values({ "FCGI_MPXS_CONNS", "X_NOT_A_VARIABLE" }))
        assert.same({}, c:get_values({}))
    end)

    it("answers every record type it does not know with FCGI_UNKNOWN_TYPE", function()
        local srv = start()
        local c = helpers.connect(srv)
        local types = { fc.END_REQUEST, fc.STDOUT, fc.STDERR, fc.GET_VALUES_RESULT,
                        fc.UNKNOWN_TYPE, 12, 99, 255 }
        c:cork()
        for _, t in ipairs(types) do c:send_raw(fc.record(t, 0, "xyz")) end
        c:uncork()
        for _, t in ipairs(types) do
            local rec = c:read_record()
            assert.same({ fc.UNKNOWN_TYPE, 0, 8, t }, { rec.type, rec.id, #rec.content, rec.unknown_type })
            assert.equal(string.char(t) .. ("\0"):rep(7), rec.content)
        end
        assert.equal("still open", echo_body(c:request(1, "/echo", "still open")))
    end)
end)

describe("FastCGI requests", function()
    after_each(helpers.cleanup)

    it("ends a request of a role other than RESPONDER with FCGI_UNKNOWN_ROLE", function()
        local srv = start()
        local c = helpers.connect(srv)
        for id, role in ipairs({ fc.AUTHORIZER, fc.FILTER, 0, 65535 }) do
            c:cork()
            c:begin(id, { role = role })
            c:params(id, fc.cgi_params("GET", "/echo"))
            c:stdin(id, "")
            c:uncork()
            local r = c:read_response(id)
            assert.equal(fc.UNKNOWN_ROLE, r.protocol_status, "role " .. role)
            assert.equal(0, r.stdout_records, "role " .. role .. " got output")
        end
        assert.equal("ok", echo_body(c:request(1, "/echo", "ok")))
    end)

    it("accepts records with padding", function()
        local srv = start()
        local c = helpers.connect(srv)
        local pad = function(n) return { padding = n, pad_byte = "\255" } end
        c:send_raw(fc.record(fc.BEGIN_REQUEST, 1, fc.begin_body(fc.RESPONDER, fc.KEEP_CONN), pad(7))
            .. fc.record(fc.PARAMS, 1, fc.encode_nv(fc.cgi_params("POST", "/echo?p=1")), pad(255))
            .. fc.record(fc.PARAMS, 1, "", pad(1))
            .. fc.record(fc.STDIN, 1, "padded body", pad(3))
            .. fc.record(fc.STDIN, 1, "", pad(8)))
        local r = c:read_response(1)
        local params, body = helpers.parse_echo(r.body)
        assert.same({ "padded body", "p=1" }, { body, params.QUERY_STRING })
    end)

    it("parses a request sent one byte at a time", function()
        local srv = start()
        local c = helpers.connect(srv)
        local long = ("L"):rep(300)                   -- a 4-byte name-value length
        c:send_bytewise(fc.begin_record(1)
            .. fc.params_records(1, fc.cgi_params("POST", "/echo?bytewise=1", { X_LONG = long }))
            .. fc.stdin_records(1, "one byte at a time") .. fc.stdin_records(1, ""))
        local params, body = helpers.parse_echo(c:read_response(1).body)
        assert.same({ "one byte at a time", long, "/echo" }, { body, params.X_LONG, params.DOCUMENT_URI })
    end)

    it("accepts short name-value lengths written in four bytes", function()
        local srv = start()
        local c = helpers.connect(srv)
        c:begin(1)
        c:params(1, fc.cgi_params("GET", "/echo", { SHORT = "v" }), { force4 = true })
        c:stdin(1, "")
        local params = helpers.parse_echo(c:read_response(1).body)
        assert.equal("v", params.SHORT)
    end)

    it("handles several requests and management records in one write", function()
        local srv = start()
        local c = helpers.connect(srv)
        c:cork()
        for id = 1, 3 do
            c:begin(id)
            c:params(id, fc.cgi_params("POST", "/echo"))
            c:stdin(id, "body " .. id)
            c:stdin(id, "")
        end
        c:send_raw(fc.record(fc.GET_VALUES, 0, fc.encode_nv({ FCGI_MPXS_CONNS = "" })))
        c:uncork()
        for id = 3, 1, -1 do assert.equal("body " .. id, echo_body(c:read_response(id))) end
        local rec = c:read_matching(function(r) return r.type == fc.GET_VALUES_RESULT end)
        assert.same({ FCGI_MPXS_CONNS = "1" }, rec.values)
    end)

    it("serves request ids 1 and 65535 side by side", function()
        local srv = start()
        local c = helpers.connect(srv)
        for _, id in ipairs({ 65535, 1 }) do
            c:begin(id)
            c:params(id, fc.cgi_params("POST", "/echo"))
        end
        c:stdin(65535, "high"); c:stdin(65535, "")
        c:stdin(1, "low"); c:stdin(1, "")
        local hi, lo = c:read_response(65535), c:read_response(1)
        assert.same({ "high", "65535" }, { echo_body(hi), hi.headers["x-id"] })
        assert.same({ "low", "1" }, { echo_body(lo), lo.headers["x-id"] })
    end)

    it("ignores records for request ids that are not active", function()
        local srv = start()
        local c = helpers.connect(srv)
        c:cork()
        c:stdin(7, "stray body")
        c:params(8, { A = "1" }, { open = true })
        c:stdin(9, "")
        c:abort(10)
        c:send_raw(fc.record(fc.DATA, 11, "data"))
        c:uncork()
        assert.equal("after strays", echo_body(c:request(1, "/echo", "after strays")))
        -- the request that ended is inactive again: late records are ignored too
        c:stdin(1, "late")
        c:abort(1)
        assert.equal("again", echo_body(c:request(2, "/echo", "again")))
        for _, rec in ipairs(c.pending) do
            error(("unexpected record type %d for id %d"):format(rec.type, rec.id))
        end
        for id = 7, 11 do assert.equal(0, c:end_count(id), "END_REQUEST for inactive id " .. id) end
        assert.equal(1, c:end_count(1))
    end)

    it("closes the connection after END_REQUEST without FCGI_KEEP_CONN", function()
        local srv = start()
        local c = helpers.connect(srv)
        local r = c:request(1, "/echo", "bye", { keep_conn = false })
        assert.equal("bye", echo_body(r))
        assert.is_true(c:closed_by_peer(5), "connection still open without FCGI_KEEP_CONN")
        assert_serving(srv)
    end)

    it("keeps the connection open with FCGI_KEEP_CONN", function()
        local srv = start()
        local c = helpers.connect(srv)
        for id = 1, 3 do
            assert.equal("keep " .. id, echo_body(c:request(id, "/echo", "keep " .. id)))
        end
        assert.equal("reused id", echo_body(c:request(1, "/echo", "reused id")))
    end)

    it("does not cut off an active request when one without FCGI_KEEP_CONN ends", function()
        local srv = start()
        local c = helpers.connect(srv)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/echo"))         -- waits for its body
        local r2 = c:request(2, "/echo", "short one", { keep_conn = false })
        assert.equal("short one", echo_body(r2))
        c:stdin(1, "long one")
        c:stdin(1, "")
        local r1 = c:read_response(1)
        assert.equal("long one", echo_body(r1))
        assert.is_true(r1.stdout_ended)
    end)

    it("sends exactly one END_REQUEST per request, aborted ones included", function()
        local srv = start()
        local c = helpers.connect(srv)
        c:cork()
        local uris = { "/echo", "/error", "/status?code=404", "/noread", "/sleep?ms=50" }
        for id, uri in ipairs(uris) do
            c:begin(id)
            c:params(id, fc.cgi_params("POST", uri))
            c:stdin(id, "b")
            c:stdin(id, "")
        end
        c:begin(6, { role = fc.FILTER })
        c:params(6, {})
        for _, id in ipairs({ 7, 8 }) do
            c:begin(id)
            c:params(id, fc.cgi_params("GET", "/sleep?ms=100"))
            c:stdin(id, "")
        end
        c:abort(7)
        c:begin(9)                                           -- aborted while waiting for stdin
        c:params(9, fc.cgi_params("POST", "/echo"))
        c:abort(9)
        c:uncork()
        for id = 1, 9 do c:read_response(id) end
        c:abort(8)                                           -- already ended: ignored
        -- sleeps past the aborted request's timer, so a late END would come first
        assert.equal(200, c:request(10, "/sleep?ms=300").status)
        for id = 1, 9 do assert.equal(1, c:end_count(id), "END_REQUEST records for id " .. id) end
    end)

    it("never sends STDOUT records over 65535 bytes", function()
        local srv = start()
        local c = helpers.connect(srv)
        local pattern = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
        for id, q in ipairs({ "bytes=1000000&chunk=300000", "bytes=1000000&chunk=70000&flush=1",
                              "bytes=65536&chunk=65536" }) do
            local r = c:request(id, "/big?" .. q)
            local bytes = tonumber(q:match("bytes=(%d+)"))
            assert.equal(200, r.status)
            assert.equal(bytes, #r.body, q)
            assert.is_true(r.body == pattern:rep(math.ceil(bytes / 64)):sub(1, bytes), q .. ": body differs")
            assert.is_true(r.max_record <= 65535, q .. ": a STDOUT record of " .. r.max_record .. " bytes")
            assert.is_true(r.stdout_ended, q .. ": no empty STDOUT before END_REQUEST")
            assert.same({ 0, fc.REQUEST_COMPLETE }, { r.app_status, r.protocol_status })
        end
    end)

    it("answers 431 when params exceed --max-params and keeps the connection", function()
        local srv = start({ "--max-params", "1k" })
        local c = helpers.connect(srv)
        local r = c:request(1, fc.cgi_params("POST", "/echo", { X_BIG = ("x"):rep(2000) }), "ignored")
        assert.equal(431, r.status)
        local small = c:request(2, fc.cgi_params("POST", "/echo", { X_SMALL = ("s"):rep(300) }), "fits")
        assert.equal("fits", echo_body(small))
        assert.equal("reused", echo_body(c:request(1, "/echo", "reused")))
    end)

    it("answers FCGI_OVERLOADED beyond --max-conn-reqs", function()
        local srv = start({ "--max-conn-reqs", "4" })
        local c = helpers.connect(srv)
        for id = 1, 4 do
            c:begin(id)
            c:params(id, fc.cgi_params("POST", "/echo"))
        end
        c:cork()
        c:begin(5)
        c:params(5, fc.cgi_params("POST", "/echo"))
        c:stdin(5, "too many")
        c:stdin(5, "")
        c:uncork()
        local r5 = c:read_response(5)
        assert.same({ fc.OVERLOADED, 0 }, { r5.protocol_status, r5.stdout_records })
        for id = 1, 4 do
            c:stdin(id, "in " .. id)
            c:stdin(id, "")
            assert.equal("in " .. id, echo_body(c:read_response(id)))
        end
        assert.equal("room again", echo_body(c:request(5, "/echo", "room again")))
    end)

    it("answers FCGI_OVERLOADED beyond --max-reqs across connections", function()
        local srv = start({ "--max-reqs", "3" })
        local a, b = helpers.connect(srv), helpers.connect(srv)
        for _, p in ipairs({ { a, 1 }, { a, 2 }, { b, 1 } }) do
            p[1]:begin(p[2])
            p[1]:params(p[2], fc.cgi_params("POST", "/echo"))
        end
        a:get_values({})                                   -- all three are in flight now
        local r = b:request(2, "/echo", "one too many")
        assert.equal(fc.OVERLOADED, r.protocol_status)
        for _, p in ipairs({ { a, 1 }, { a, 2 }, { b, 1 } }) do
            p[1]:stdin(p[2], "x"); p[1]:stdin(p[2], "")
            assert.equal("x", echo_body(p[1]:read_response(p[2])))
        end
        assert.equal("fits", echo_body(b:request(2, "/echo", "fits")))
    end)
end)

describe("FastCGI protocol errors", function()
    after_each(helpers.cleanup)

    local begin1 = fc.begin_record(1)
    local params1 = fc.params_records(1, fc.cgi_params("POST", "/echo"))

    it("closes only the connection that sent a bad version byte", function()
        local srv = start()
        assert_protocol_error(srv, fc.record(fc.BEGIN_REQUEST, 1, fc.begin_body(), { version = 2 }))
        assert_protocol_error(srv, fc.record(fc.GET_VALUES, 0, "", { version = 0 }))
    end)

    it("closes the connection on garbage", function()
        local srv = start()
        assert_protocol_error(srv, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_protocol_error(srv, ("\255"):rep(64))
    end)

    it("closes the connection on BEGIN_REQUEST for an active id", function()
        local srv = start()
        assert_protocol_error(srv, begin1, begin1 .. params1)
    end)

    it("closes the connection on a malformed BEGIN_REQUEST body", function()
        local srv = start()
        assert_protocol_error(srv, fc.record(fc.BEGIN_REQUEST, 1, "\0\1\1"))
    end)

    it("closes the connection on hostile name-value lengths", function()
        local srv = start()
        local big = fc.nv_length(0x7fffffff)
        for _, nv in ipairs({
            big .. fc.nv_length(1) .. "ab",                 -- name of 2 GiB
            fc.nv_length(1) .. big .. "ab",                 -- value of 2 GiB
            big .. big .. "abcd",                           -- their sum overflows 32 bits
            fc.nv_length(200) .. fc.nv_length(1) .. "short", -- runs past the stream's end
        }) do
            assert_protocol_error(srv, fc.record(fc.PARAMS, 1, nv) .. fc.record(fc.PARAMS, 1, ""), begin1)
        end
    end)

    it("closes the connection on STDIN before the params ended", function()
        local srv = start()
        assert_protocol_error(srv, fc.stdin_records(1, "too early"),
                              begin1 .. fc.params_records(1, { A = "1" }, { open = true }))
    end)

    it("closes the connection on records after a stream ended", function()
        local srv = start()
        assert_protocol_error(srv, fc.params_records(1, { MORE = "1" }), begin1 .. params1)
        local noread = fc.params_records(1, fc.cgi_params("POST", "/noread?ms=3000"))
        assert_protocol_error(srv, fc.stdin_records(1, "after the end"),
                              begin1 .. noread .. fc.stdin_records(1, ""))
    end)

    -- Requests 1..n, each begun with 60,000 bytes of params and none ended.
    local function open_params(n)
        local out = {}
        for id = 1, n do
            out[#out + 1] = fc.begin_record(id)
                .. fc.params_records(id, { X = ("p"):rep(60000) }, { open = true })
        end
        return table.concat(out)
    end

    it("closes the connection holding too many params for requests not started", function()
        local srv = start({ "--max-conn-reqs", "100" })     -- the floor: 1 MiB
        local mark = srv:mark()
        assert_protocol_error(srv, open_params(20))
        -- the 18th request's params pass 1 MiB: 17 x 60,000 bytes were held
        srv:wait_log("conn %d+ %(127%.0%.0%.1:%d+%): protocol error: params held for requests "
                     .. "not started over 1048576 bytes %(1 KiB per %-%-max%-conn%-reqs, at least "
                     .. "1 MiB%) %(request id 18%); closing", 5, mark)
    end)

    it("closes at 1 KiB per --max-conn-reqs above the floor, and says the figure", function()
        local srv = start({ "--max-conn-reqs", "2000" })    -- 2,048,000 bytes
        local mark = srv:mark()
        assert_protocol_error(srv, open_params(40))         -- 34 x 60000 fit, the 35th not
        srv:wait_log("protocol error: params held for requests not started over 2048000 bytes "
                     .. "%(1 KiB per %-%-max%-conn%-reqs, at least 1 MiB%) %(request id 35%)", 5, mark)
    end)

    it("lets a connection hold 1 KiB of unfinished params per --max-conn-reqs", function()
        local srv = start({ "--max-conn-reqs", "4000" })    -- 4,000 KiB
        local c = helpers.connect(srv)
        local out = {}
        for id = 1, 50 do                                    -- 50 x 60000 bytes: 2.9 MiB
            out[#out + 1] = fc.begin_record(id)
                .. fc.params_records(id, fc.cgi_params("GET", "/echo", { X = ("p"):rep(60000) }),
                                     { open = true })
        end
        c:send_raw(table.concat(out))
        for id = 1, 50 do c:params(id, {}); c:stdin(id, "") end
        for id = 1, 50 do assert.equal(200, c:read_response(id).status) end
    end)
end)

describe("--params-timeout", function()
    after_each(helpers.cleanup)

    -- The params of request id: some sent, the stream left open.
    local function params_left_open(c, id)
        c:begin(id)
        c:params(id, { A = "1" }, { open = true })
    end

    it("answers 408 to params that do not end in time, logs it, and keeps the connection", function()
        local srv = start({ "--params-timeout", "0.5" })
        local c = helpers.connect(srv)
        local mark = srv:mark()
        local t0 = socket.gettime()
        params_left_open(c, 1)
        local r = c:read_response(1, 10)
        local waited = socket.gettime() - t0
        assert.equal(408, r.status)
        assert.equal("408 Request Timeout\n", r.body)
        assert.is_true(waited >= 0.5, ("answered after %.3f s"):format(waited))
        srv:wait_log("conn %d+ request 1: params not complete 0%.5 s after BEGIN_REQUEST "
                     .. "%(4 bytes so far; %-%-params%-timeout%); answered 408", 5, mark)
        assert.equal("kept", echo_body(c:request(2, "/echo", "kept")))  -- same connection
    end)

    it("bounds a BEGIN_REQUEST followed by nothing, while the connection's others are served", function()
        local srv = start({ "--params-timeout", "1" })
        local c = helpers.connect(srv)
        local mark = srv:mark()
        c:begin(7)                                           -- and then nothing for 7
        for id = 1, 3 do assert.equal("x" .. id, echo_body(c:request(id, "/echo", "x" .. id))) end
        assert.equal(408, c:read_response(7, 10).status)
        srv:wait_log("conn %d+ request 7: params not complete 1 s after BEGIN_REQUEST "
                     .. "%(0 bytes so far; %-%-params%-timeout%); answered 408", 5, mark)
        assert.equal(1, #srv:lines("params not complete", mark))
    end)

    it("does not limit a handler that runs longer once its params are in", function()
        local srv = start({ "--params-timeout", "0.3" })
        local c = helpers.connect(srv)
        local r = c:request(1, "/sleep?ms=800", nil, { timeout = 10 })
        assert.equal(200, r.status)
        assert.same({}, srv:lines("params not complete"))
    end)

    it("waits 60 s by default and 0 turns it off (--help says both)", function()
        local status, _, out = helpers.run_cli({ "--help" })
        assert.equal(0, status)
        assert.matches("%-%-params%-timeout S seconds from BEGIN_REQUEST to the end of its params "
                       .. "%(like nginx's client_header_timeout%); then 408; default 60; 0: none",
                       out:gsub("%s+", " "))
        local srv = start({ "--params-timeout", "0" })
        local c = helpers.connect(srv)
        c:begin(1)
        assert.is_true(not c:closed_by_peer(1.2), "closed")  -- nothing ends it
        assert.equal(0, c:end_count(1))
    end)
end)

describe("responses", function()
    after_each(helpers.cleanup)

    it("carries the handler's status and headers, repeated ones included", function()
        local srv = start()
        local c = helpers.connect(srv)
        local r = c:request(1, "/status?code=418")
        assert.same({ 418, "1", { "a=1", "b=2" }, "text/plain; charset=utf-8", "status 418" },
                    { r.status, r.headers["x-one"], r.headers["set-cookie"], r.headers["content-type"], r.body })
    end)

    it("defaults to status 200 and Content-Type text/html", function()
        local srv = start()
        local c = helpers.connect(srv)
        local r = c:request(2, "/noread")
        assert.same({ 200, "text/html", "noread 2" }, { r.status, r.headers["content-type"], r.body })
        assert.matches("^Status: 200 OK\r\n", r.stdout)
    end)

    it("answers 500 with app status 1 and logs the error when a handler raises", function()
        local srv = start()
        local c = helpers.connect(srv)
        local mark = srv:mark()
        local r = c:request(4242, "/error")
        assert.same({ 500, 1, fc.REQUEST_COMPLETE }, { r.status, r.app_status, r.protocol_status })
        srv:wait_log("fixture error before headers", 5, mark)
        local log = srv:log():sub(mark + 1)
        assert.matches("4242", log, 1, true)
        assert.matches("/error", log, 1, true)
        assert.matches("traceback", log, 1, true)
        assert.equal("after", echo_body(c:request(8, "/echo", "after")))
    end)

    it("ends the stream where it was when a handler raises after sending headers", function()
        local srv = start()
        local c = helpers.connect(srv)
        local r = c:request(1, "/error?after=1")
        assert.same({ 200, "partial", 1 }, { r.status, r.body, r.app_status })
    end)
end)
