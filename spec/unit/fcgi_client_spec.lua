-- Unit specs of the specs' own FastCGI client codec (no server involved).
local fc = require "fcgi_client"
local helpers = require "helpers"
local socket = require "socket"

local function bytes(...) return string.char(...) end

describe("fcgi_client codec", function()
    it("encodes a record header byte by byte (FastCGI 1.0 §3.3)", function()
        local r = fc.record(fc.STDIN, 0x1234, "abc", { padding = 5 })
        assert.equal(bytes(1, 5, 0x12, 0x34, 0, 3, 5, 0) .. "abc" .. ("\0"):rep(5), r)
    end)

    it("decodes what it encodes, padding and custom version included", function()
        local r = fc.record(fc.STDOUT, 65535, "hello", { padding = 3, version = 7 })
        local rec, stop = fc.decode_record(r, 1)
        assert.equal(#r + 1, stop)
        assert.same({ 7, fc.STDOUT, 65535, "hello", 3 },
                    { rec.version, rec.type, rec.id, rec.content, rec.padding })
    end)

    it("reports need-more for every proper prefix of a record", function()
        local r = fc.record(fc.STDOUT, 1, "xyz", { padding = 2 })
        for n = 0, #r - 1 do
            assert.is_nil(fc.decode_record(r:sub(1, n), 1), "prefix of " .. n .. " bytes")
        end
        assert.is_table(fc.decode_record(r, 1))
    end)

    it("decodes consecutive records from an offset", function()
        local s = fc.record(fc.STDOUT, 1, "a") .. fc.record(fc.STDERR, 2, "bb")
        local r1, p = fc.decode_record(s, 1)
        local r2, p2 = fc.decode_record(s, p)
        assert.same({ "a", "bb", #s + 1 }, { r1.content, r2.content, p2 })
    end)

    it("encodes name-value lengths below 128 in one byte and others in four", function()
        assert.equal(bytes(127), fc.nv_length(127))
        assert.equal(bytes(0x80, 0, 0, 128), fc.nv_length(128))
        assert.equal(bytes(0xff, 0xff, 0xff, 0xff), fc.nv_length(0x7fffffff))
        assert.equal(bytes(0x80, 0, 0, 5), fc.nv_length(5, true))
    end)

    it("round-trips name-value pairs of 1- and 4-byte lengths in order", function()
        local long = ("v"):rep(70000)
        local list = { { "A", "1" }, { ("n"):rep(200), long }, { "EMPTY", "" }, { "Z", "z" } }
        local got, map = fc.decode_nv(fc.encode_nv(list))
        assert.same(list, got)
        assert.equal(long, map[("n"):rep(200)])
        local got4 = fc.decode_nv(fc.encode_nv(list, true))
        assert.same(list, got4)
    end)

    it("encodes a params map in sorted name order", function()
        assert.equal(fc.encode_nv({ { "A", "1" }, { "B", "2" } }), fc.encode_nv({ B = "2", A = "1" }))
    end)

    it("rejects truncated name-value pairs", function()
        assert.is_nil((fc.decode_nv(bytes(5, 1) .. "abc")))
        assert.is_nil((fc.decode_nv(bytes(0x80, 0, 1))))
    end)

    it("splits streams into records of at most 65535 bytes", function()
        local data = ("x"):rep(65535 * 2 + 10)
        local s = fc.stdin_records(3, data)
        local sizes, pos, joined = {}, 1, {}
        while pos <= #s do
            local rec
            rec, pos = fc.decode_record(s, pos)
            sizes[#sizes + 1] = #rec.content
            joined[#joined + 1] = rec.content
            assert.same({ fc.STDIN, 3 }, { rec.type, rec.id })
        end
        assert.same({ 65535, 65535, 10 }, sizes)
        assert.equal(data, table.concat(joined))
    end)

    it("ends the PARAMS stream with an empty record unless asked to keep it open", function()
        local s = fc.params_records(1, {})
        assert.equal(fc.record(fc.PARAMS, 1, ""), s)
        local open = fc.params_records(1, { A = "b" }, { open = true })
        assert.equal(fc.record(fc.PARAMS, 1, fc.encode_nv({ A = "b" })), open)
        assert.equal(open .. fc.record(fc.PARAMS, 1, ""), fc.params_records(1, { A = "b" }))
    end)

    it("encodes BEGIN_REQUEST with role and flags (§5.1)", function()
        local rec = fc.decode_record(fc.begin_record(9, { role = fc.FILTER, keep_conn = false }))
        assert.same({ fc.BEGIN_REQUEST, 9, bytes(0, 3, 0, 0, 0, 0, 0, 0) },
                    { rec.type, rec.id, rec.content })
        rec = fc.decode_record(fc.begin_record(9))
        assert.equal(bytes(0, 1, 1, 0, 0, 0, 0, 0), rec.content)
    end)

    it("decodes END_REQUEST, UNKNOWN_TYPE and GET_VALUES_RESULT bodies", function()
        local e = fc.decode_record(fc.record(fc.END_REQUEST, 4, bytes(0, 1, 0, 2, 3, 0, 0, 0)))
        assert.same({ 65538, fc.UNKNOWN_ROLE }, { e.app_status, e.protocol_status })
        local u = fc.decode_record(fc.record(fc.UNKNOWN_TYPE, 0, bytes(42, 0, 0, 0, 0, 0, 0, 0)))
        assert.equal(42, u.unknown_type)
        local v = fc.decode_record(fc.record(fc.GET_VALUES_RESULT, 0,
                                             fc.encode_nv({ FCGI_MPXS_CONNS = "1" })))
        assert.same({ FCGI_MPXS_CONNS = "1" }, v.values)
    end)

    it("parses CGI output into status, lower-cased headers and body", function()
        local status, h, body = fc.parse_cgi(
            "Status: 404 Not Found\r\nX-A: 1\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\nbody\r\n\r\n")
        assert.same({ 404, "1", { "a", "b" }, "body\r\n\r\n" }, { status, h["x-a"], h["set-cookie"], body })
        assert.equal(200, (fc.parse_cgi("Content-Type: text/plain\r\n\r\n")))
        assert.is_nil((fc.parse_cgi("")))
    end)
end)

describe("fcgi_client connection", function()
    local server, port
    before_each(function()
        server = assert(socket.bind("127.0.0.1", 0))
        port = select(2, server:getsockname())
    end)
    after_each(function()
        server:close()
        helpers.cleanup()
    end)

    local function accept()
        server:settimeout(5)
        return assert(server:accept())
    end

    it("collects one response while keeping other ids' records for later", function()
        local c = fc.connect(port, { timeout = 2 })
        helpers.defer(function() c:close() end)
        local peer = accept()
        helpers.defer(function() peer:close() end)
        local e0 = bytes(0, 0, 0, 0, 0, 0, 0, 0)
        assert(peer:send(fc.record(fc.STDOUT, 2, "Status: 201 Created\r\n\r\ntwo")
            .. fc.record(fc.STDOUT, 1, "Content-Type: text/plain\r\n\r\none")
            .. fc.record(fc.STDOUT, 2, "") .. fc.record(fc.END_REQUEST, 2, e0)
            .. fc.record(fc.STDERR, 1, "warn") .. fc.record(fc.STDOUT, 1, "!")
            .. fc.record(fc.STDOUT, 1, "") .. fc.record(fc.END_REQUEST, 1, e0)))
        local r1 = c:read_response(1)
        assert.same({ 200, "one!", "warn", 2, 31, true },
                    { r1.status, r1.body, r1.stderr, r1.stdout_records, r1.max_record, r1.stdout_ended })
        local r2 = c:read_response(2)
        assert.same({ 201, "two", 0 }, { r2.status, r2.body, r2.protocol_status })
        assert.equal(1, c:end_count(1))
    end)

    it("fails with a clear message instead of hanging when nothing arrives", function()
        local c = fc.connect(port, { timeout = 0.05 })
        helpers.defer(function() c:close() end)
        local t0 = socket.gettime()
        assert.has_error(function() c:read_record() end, "fcgi_client: timed out after 0.1 s waiting for a record")
        assert.is_true(socket.gettime() - t0 < 1)
    end)

    it("tells a closed connection from an open one", function()
        local c = fc.connect(port)
        helpers.defer(function() c:close() end)
        local peer = accept()
        assert.is_false(c:closed_by_peer(0.05))
        peer:send(fc.record(fc.STDOUT, 1, "late"))
        peer:close()
        assert.is_true(c:closed_by_peer(2))
        assert.equal("late", c:read_record().content)
        assert.has_error(function() c:read_record(1) end,
            "fcgi_client: connection closed by the server while waiting for a record")
    end)

    it("sends a request's records in one piece when corked", function()
        local c = fc.connect(port)
        helpers.defer(function() c:close() end)
        local peer = accept()
        helpers.defer(function() peer:close() end)
        c:cork()
        c:begin(5); c:params(5, { A = "b" }); c:stdin(5, "body"); c:stdin(5, "")
        c:uncork()
        local want = fc.begin_record(5) .. fc.params_records(5, { A = "b" })
            .. fc.stdin_records(5, "body") .. fc.stdin_records(5, "")
        peer:settimeout(2)
        assert.equal(want, peer:receive(#want))
    end)
end)
