-- Many requests on one FastCGI connection (FCGI_MPXS_CONNS=1).
local helpers = require "helpers"
local fc = require "fcgi_client"
local socket = require "socket"

local function echo_body(r) return select(2, helpers.parse_echo(r.body)) end

describe("request multiplexing", function()
    local srv
    before_each(function() srv = helpers.start_server("app") end)
    after_each(helpers.cleanup)

    it("keeps the records of interleaved request ids apart", function()
        local c = helpers.connect(srv)
        local n = 50
        local params, bodies = {}, {}
        for id = 1, n do
            params[id] = fc.encode_nv(fc.cgi_params("POST", "/echo?id=" .. id, { X_OWN = ("o"):rep(id * 3) }))
            bodies[id] = ("body of " .. id .. ";"):rep(id)
        end
        c:cork()
        for id = 1, n do c:begin(id) end
        -- params in three slices per id, round robin across ids
        for slice = 0, 2 do
            for id = 1, n do
                local p, third = params[id], math.ceil(#params[id] / 3)
                c:send_raw(fc.record(fc.PARAMS, id, p:sub(slice * third + 1, (slice + 1) * third)))
            end
        end
        for id = n, 1, -1 do c:send_raw(fc.record(fc.PARAMS, id, "")) end
        -- bodies in pieces of 7 bytes, round robin
        for off = 1, #bodies[n], 7 do
            for id = 1, n do
                local piece = bodies[id]:sub(off, off + 6)
                if piece ~= "" then c:stdin(id, piece) end
            end
        end
        for id = 1, n do c:stdin(id, "") end
        c:uncork()
        for id = n, 1, -1 do
            local r = c:read_response(id)
            local p, body = helpers.parse_echo(r.body)
            assert.same({ bodies[id], "id=" .. id, ("o"):rep(id * 3), tostring(id) },
                        { body, p.QUERY_STRING, p.X_OWN, r.headers["x-id"] })
        end
    end)

    it("answers request 2 while request 1 waits for its body", function()
        local c = helpers.connect(srv)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/echo"))          -- request 1 gets no stdin yet
        local r2 = c:request(2, "/echo", "b")
        assert.equal("b", echo_body(r2))
        assert.equal(0, c:end_count(1))
        c:stdin(1, "a")
        c:stdin(1, "")
        assert.equal("a", echo_body(c:read_response(1)))
    end)

    it("streams a body to req:read while other requests complete", function()
        local c = helpers.connect(srv)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/stream?max=100000"))
        local seen = {}
        for i = 1, 3 do
            c:stdin(1, ("s"):rep(1000 * i))
            -- the handler answers each piece before the test sends the next
            local rec = c:read_matching(function(r) return r.id == 1 and r.type == fc.STDOUT end)
            seen[#seen + 1] = rec.content
            assert.matches("got %d+\n$", rec.content)
            assert.equal("x" .. i, echo_body(c:request(1 + i, "/echo", "x" .. i)))
        end
        c:stdin(1, "")
        local r = c:read_response(1)
        local status, _, body = fc.parse_cgi(table.concat(seen) .. r.stdout)
        assert.equal(200, status)
        local total = 0
        for n in body:gmatch("got (%d+)\n") do total = total + tonumber(n) end
        assert.equal(6000, total)
        assert.matches("total 6000$", body)
    end)

    it("is not stalled by a handler that never reads its body", function()
        local c = helpers.connect(srv)
        c:begin(1)
        c:params(1, fc.cgi_params("POST", "/noread?ms=1500"))
        local t0 = socket.gettime()
        -- 6 MiB nobody reads: more than the socket buffers hold, so the send
        -- itself stalls if the server stops reading the connection
        c:stdin(1, ("n"):rep(6 * 1024 * 1024))
        local r2 = c:request(2, "/echo", "not stalled")
        local took = socket.gettime() - t0
        print(("  noread: request 2 answered after %.3f s"):format(took))
        assert.equal("not stalled", echo_body(r2))
        assert.is_true(took < 1, ("request 2 took %.3f s: it waited for the 1.5 s handler"):format(took))
        assert.equal(0, c:end_count(1))
        c:stdin(1, "")
        assert.equal("noread 1", c:read_response(1).body)
    end)

    it("answers 1000 concurrent requests on one connection correctly", function()
        local c = helpers.connect(srv, nil, { timeout = 20 })
        local n = 1000
        c:cork()
        for id = 1, n do
            c:begin(id)
            c:params(id, fc.cgi_params("POST", "/echo?n=" .. id))
            c:stdin(id, "request " .. id)
            c:stdin(id, "")
        end
        local t0 = socket.gettime()
        c:uncork()
        for id = n, 1, -1 do
            local r = c:read_response(id)
            local p, body = helpers.parse_echo(r.body)
            assert.same({ 200, "request " .. id, "n=" .. id }, { r.status, body, p.QUERY_STRING })
            assert.equal(1, c:end_count(id))
        end
        print(("  1000 echo requests on one connection: %.3f s"):format(socket.gettime() - t0))
    end)

    -- From 1,024 requests in flight, a request that parks has its params
    -- packed (src/server/params.h): the later ones here are, the first
    -- 1,023 are not, and every param, the path and the query must read the
    -- same either way, whichever param the path comes from.
    it("keeps every param of 1500 waiting requests, packed or not", function()
        local c = helpers.connect(srv, nil, { timeout = 20 })
        local n, want = 1500, {}
        c:cork()
        for id = 1, n do
            local p = fc.cgi_params("POST", "/echo/p" .. id .. "?q=" .. id, {
                HTTP_USER_AGENT = "agent " .. id, HTTP_HOST = "h" .. id .. ".test",
                HTTP_X_OWN = ("o"):rep(id % 150), SERVER_SOFTWARE = ("s"):rep(128 + id % 3),
                HTTP_COOKIE = "", [("N"):rep(130)] = "long name " .. id,
            })
            local path = "/echo/p" .. id
            if id % 3 == 1 then p.DOCUMENT_URI = "" end -- the path from REQUEST_URI
            if id % 3 == 2 then -- from SCRIPT_NAME and PATH_INFO joined
                p.DOCUMENT_URI, p.REQUEST_URI, p.SCRIPT_NAME, p.PATH_INFO = "", "", "/echo", "/p" .. id
            end
            want[id] = { params = p, path = path }
            c:begin(id)
            c:params(id, p)
        end
        -- the bodies after every request's params: each handler parks in
        -- read_body, the later ones with over 1,024 requests in flight
        for id = 1, n do
            c:stdin(id, "body " .. id)
            c:stdin(id, "")
        end
        c:uncork()
        for id = 1, n do
            local r = c:read_response(id)
            local got, body = helpers.parse_echo(r.body)
            assert.equal(200, r.status)
            assert.equal("body " .. id, body)
            assert.equal(want[id].path, r.headers["x-path"])
            assert.equal("q=" .. id, r.headers["x-query"])
            assert.same(want[id].params, got)
        end
    end)

    it("runs 500 sleeping requests on one connection concurrently", function()
        local c = helpers.connect(srv)
        local n = 500
        c:cork()
        for id = 1, n do
            c:begin(id)
            c:params(id, fc.cgi_params("GET", "/sleep?ms=500"))
            c:stdin(id, "")
        end
        local t0 = socket.gettime()
        c:uncork()
        for id = 1, n do
            local r = c:read_response(id)
            assert.equal("slept 500 id " .. id, r.body)
        end
        local took = socket.gettime() - t0
        print(("  500 x 0.5 s sleeps on one connection: %.3f s wall"):format(took))
        assert.is_true(took < 2.5, ("500 sleeping requests took %.3f s"):format(took))
        assert.is_true(took >= 0.45, ("sleeps ended early: %.3f s"):format(took))
    end)
end)
