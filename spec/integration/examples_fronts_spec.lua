-- examples/index.lua behind the two fronts its comments point at, each
-- configured with its example file itself (only the addresses replaced;
-- spec/support/fronts.lua): nginx with examples/nginx.conf (upstream
-- keepalive, fastcgi_keep_conn on, include fastcgi_params) and HAProxy with
-- examples/haproxy.cfg (fcgi-app with mpxs-conns, max-reqs, get-values,
-- keep-conn). The examples are checked over HTTP through each. What a front
-- itself passes on (params, statuses and headers, bodies, streaming,
-- parallel and multiplexed requests, keepalive, a client going away) is
-- checked in fronts_spec.lua, with every other front.
local helpers = require "helpers"
local fronts = require "fronts"
local cjson = require "cjson"

-- Each front: how to start it in front of upstream ("host:port"), and
--   chat   the chat at /chat/ is checked through it (through HAProxy:
--          demo_spec.lua, FRONT=haproxy)
--   keeps  it keeps at most this many FastCGI connections open (keep-conn)
--          for a handful of requests, as afcgi's status endpoint and debug
--          log show
local FRONTS = {
    {
        name = "nginx with examples/nginx.conf",
        start = function(upstream) return fronts.nginx(upstream, "examples/nginx.conf", "8080") end,
        chat = true,
    },
    {
        name = "haproxy with examples/haproxy.cfg",
        start = fronts.haproxy,
        -- at least one connection per thread: a handful, not one per request
        keeps = 8,
    },
}

local function count_accepted(srv, mark)
    local n = 0
    for _ in srv:log():sub((mark or 0) + 1):gmatch("conn %d+: accepted from ") do n = n + 1 end
    return n
end

for _, front_def in ipairs(FRONTS) do
    describe(front_def.name .. " in front of examples/index.lua", function()
        local srv, front
        local function get(path)
            return helpers.http_request(front.port, { method = "GET", path = path })
        end
        before_each(function()
            -- debug log: one "accepted" line per FastCGI connection
            srv = helpers.start_server("examples/index.lua", {
                args = { "--log-level", "debug", "--status-path", "/afcgi-status" },
            })
            front = front_def.start("127.0.0.1:" .. srv.port)
        end)
        after_each(helpers.cleanup)

        it("serves the index page, /hello, /echo, and 404 for other paths"
           .. (front_def.keeps and ", over the FastCGI connections it keeps" or ""), function()
            local index = get("/")
            assert.equal(200, index.status)
            assert.equal("text/html; charset=utf-8", index.headers["content-type"])
            for _, link in ipairs({ '"/hello"', '"/sleep?ms=500"', '"/echo?a=1&amp;b=two"' }) do
                assert.truthy(index.body:find("href=" .. link, 1, true), "no link " .. link)
            end
            local hello = get("/hello")
            assert.same({ 200, "Hello, world!\n" }, { hello.status, hello.body })
            local echo = get("/echo?a=1&b=two%20words&c")
            assert.same({ 200, "application/json" }, { echo.status, echo.headers["content-type"] }, echo.body)
            local e = cjson.decode(echo.body)
            assert.same({ "GET", "a=1&b=two%20words&c", 0 }, { e.method, e.query, e.body_len })
            local missing = get("/nope")
            assert.same({ 404, "not found: /nope\n" }, { missing.status, missing.body })
            if not front_def.keeps then return end
            local r = get("/afcgi-status")
            assert.equal(200, r.status, r.body)
            local st = cjson.decode(r.body)
            assert.equal(1, #st.workers)
            assert.is_true(st.connections >= 1 and st.connections <= front_def.keeps,
                           "connections: " .. st.connections)
            assert.is_true(count_accepted(srv) <= front_def.keeps, srv:log())
        end)

        if front_def.chat then
            it("serves the chat at /chat/: the page, a message posted, a poll that gets it", function()
                local moved = get("/chat")
                assert.same({ 302, "/chat/" }, { moved.status, moved.headers.location })
                local page = get("/chat/")
                assert.equal(200, page.status)
                assert.truthy(page.body:find("<title>afcgi chat</title>", 1, true))
                local said = helpers.http_request(front.port, {
                    method = "POST", path = "/chat/say", body = "name=ann&text=hi+there",
                    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
                }, 10)
                assert.equal(200, said.status, said.body)
                local poll = get("/chat/poll?since=0")
                assert.equal(200, poll.status)
                local j = cjson.decode(poll.body)
                assert.same({ 1, "ann", "hi there" }, { j.last, j.messages[1].name, j.messages[1].text })
            end)
        end
    end)
end
