-- A real HAProxy in front of afcgi serving examples/index.lua, configured
-- with examples/haproxy.cfg itself (fcgi-app with mpxs-conns, max-reqs,
-- get-values, keep-conn; only its two addresses are replaced): the examples
-- through HAProxy, and the handful of FastCGI connections it keeps open.
-- What HAProxy itself passes on (params, statuses and headers, bodies,
-- streaming, many requests multiplexed over a few connections, a client
-- going away) is checked in fronts_spec.lua, with every other front.
local helpers = require "helpers"
local fronts = require "fronts"
local cjson = require "cjson"

local function count_accepted(srv, mark)
    local n = 0
    for _ in srv:log():sub((mark or 0) + 1):gmatch("conn %d+: accepted from ") do n = n + 1 end
    return n
end

local function get(hap, path)
    return helpers.http_request(hap.port, { method = "GET", path = path })
end

describe("haproxy with examples/haproxy.cfg in front of examples/index.lua", function()
    local srv, hap
    before_each(function()
        -- debug log: one "accepted" line per FastCGI connection
        srv = helpers.start_server("examples/index.lua", {
            args = { "--log-level", "debug", "--status-path", "/afcgi-status" },
        })
        hap = fronts.haproxy("127.0.0.1:" .. srv.port)
    end)
    after_each(helpers.cleanup)

    it("serves the index page, /hello, /echo, 404 for other paths, and the status endpoint", function()
        local index = get(hap, "/")
        assert.equal(200, index.status)
        assert.equal("text/html; charset=utf-8", index.headers["content-type"])
        assert.truthy(index.body:find('href="/sleep?ms=500"', 1, true), index.body)
        local hello = get(hap, "/hello")
        assert.same({ 200, "Hello, world!\n" }, { hello.status, hello.body })
        local echo = get(hap, "/echo?a=1&b=two%20words&c")
        assert.same({ 200, "application/json" }, { echo.status, echo.headers["content-type"] }, echo.body)
        local e = cjson.decode(echo.body)
        assert.same({ "GET", "a=1&b=two%20words&c", 0 }, { e.method, e.query, e.body_len })
        local missing = get(hap, "/nope")
        assert.same({ 404, "not found: /nope\n" }, { missing.status, missing.body })
        -- HAProxy keeps its FastCGI connections open (keep-conn), at least
        -- one per thread: a handful, not one per request.
        local r = get(hap, "/afcgi-status")
        assert.equal(200, r.status, r.body)
        local st = cjson.decode(r.body)
        assert.equal(1, #st.workers)
        assert.is_true(st.connections >= 1 and st.connections <= 8, "connections: " .. st.connections)
        assert.is_true(count_accepted(srv) <= 8, srv:log())
    end)
end)
