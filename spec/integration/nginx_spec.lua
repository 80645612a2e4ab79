-- A real nginx in front of afcgi, configured with examples/nginx.conf itself
-- (upstream keepalive, fastcgi_keep_conn on, include fastcgi_params; only its
-- two addresses are replaced), serving examples/index.lua, and a fixture for
-- statuses and headers. Everything is checked over HTTP.
local helpers = require "helpers"
local cjson = require "cjson"

-- examples/nginx.conf inside events/http blocks that keep nginx's files in its
-- temp prefix; its fixed addresses become ${port} and ${upstream} and the
-- include is made absolute (the config lives in the prefix, not /etc/nginx).
local function example_conf()
    local text = assert(io.open("examples/nginx.conf")):read("*a")
    local n1, n2, n3
    text, n1 = text:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:${port};")
    text, n2 = text:gsub("server 127%.0%.0%.1:9000;", "server ${upstream};")
    text, n3 = text:gsub("include fastcgi_params;", "include /etc/nginx/fastcgi_params;")
    assert(n1 == 1 and n2 == 1 and n3 == 1,
           "examples/nginx.conf no longer has its listen/server/include lines: update nginx_spec")
    return helpers.nginx_conf(text)
end

-- Starts afcgi on app (debug log: one "accepted" line per connection) and
-- nginx in front of it; both are stopped by helpers.cleanup.
local function start_pair(app)
    local srv = helpers.start_server(app, { args = { "--log-level", "debug" } })
    local ngx = helpers.start_nginx(example_conf(), { upstream = "127.0.0.1:" .. srv.port })
    return srv, ngx
end

local function count_accepted(srv, mark)
    local n = 0
    for _ in srv:log():sub((mark or 0) + 1):gmatch("conn %d+: accepted from ") do n = n + 1 end
    return n
end

local function get(ngx, path)
    return helpers.http_request(ngx.port, { method = "GET", path = path })
end

describe("nginx with examples/nginx.conf in front of examples/index.lua", function()
    local srv, ngx
    before_each(function() srv, ngx = start_pair("examples/index.lua") end)
    after_each(helpers.cleanup)

    it("passes the query string of a GET to the handler", function()
        local r = get(ngx, "/echo?a=1&b=two%20words&c")
        assert.equal(200, r.status, r.body)
        assert.equal("application/json", r.headers["content-type"])
        local e = cjson.decode(r.body)
        assert.same({ "GET", "a=1&b=two%20words&c", "/echo", "/echo?a=1&b=two%20words&c", 0 },
                    { e.method, e.query, e.params.DOCUMENT_URI, e.params.REQUEST_URI, e.body_len })
    end)

    -- a 1 MiB POST through this configuration: spec/integration/fronts_spec.lua

    it("serves the index page, /hello, and 404 for other paths", function()
        local index = get(ngx, "/")
        assert.equal(200, index.status)
        assert.equal("text/html; charset=utf-8", index.headers["content-type"])
        for _, link in ipairs({ '"/hello"', '"/sleep?ms=500"', '"/echo?a=1&amp;b=two"' }) do
            assert.truthy(index.body:find("href=" .. link, 1, true), "no link " .. link)
        end
        local hello = get(ngx, "/hello")
        assert.same({ 200, "Hello, world!\n" }, { hello.status, hello.body })
        local missing = get(ngx, "/nope")
        assert.same({ 404, "not found: /nope\n" }, { missing.status, missing.body })
    end)

    it("serves the chat at /chat/: the page, a message posted, a poll that gets it", function()
        local moved = get(ngx, "/chat")
        assert.same({ 302, "/chat/" }, { moved.status, moved.headers.location })
        local page = get(ngx, "/chat/")
        assert.equal(200, page.status)
        assert.truthy(page.body:find("<title>afcgi chat</title>", 1, true))
        local said = helpers.http_request(ngx.port, {
            method = "POST", path = "/chat/say", body = "name=ann&text=hi+there",
            headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
        }, 10)
        assert.equal(200, said.status, said.body)
        local poll = get(ngx, "/chat/poll?since=0")
        assert.equal(200, poll.status)
        local j = cjson.decode(poll.body)
        assert.same({ 1, "ann", "hi there" }, { j.last, j.messages[1].name, j.messages[1].text })
    end)

    it("runs 200 parallel /sleep?ms=200 requests at the same time", function()
        local n, reqs = 200, {}
        for i = 1, n do reqs[i] = { method = "GET", path = "/sleep?ms=200" } end
        local results, elapsed = helpers.http_parallel(ngx.port, reqs, { window = n, timeout = 20 })
        for i, r in ipairs(results) do
            assert(r.status == 200 and r.body == "slept 200\n",
                   ("request %d: %s"):format(i, r.error or (tostring(r.status) .. " " .. tostring(r.body))))
        end
        assert.is_true(elapsed >= 0.2, "faster than one sleep: " .. elapsed)
        -- One after another they would take 200 * 0.2 = 40 s.
        assert.is_true(elapsed < 4, ("200 sleeps of 0.2 s took %.2f s"):format(elapsed))
    end)

    it("reuses kept-alive FastCGI connections instead of connecting per request", function()
        -- 20 at once: nginx needs 20 backend connections and keeps 16 idle.
        local burst = {}
        for i = 1, 20 do burst[i] = { method = "GET", path = "/sleep?ms=50" } end
        for i, r in ipairs(helpers.http_parallel(ngx.port, burst)) do
            assert.equal(200, r.status, "burst request " .. i .. ": " .. tostring(r.error))
        end
        local burst_accepts = count_accepted(srv)
        assert.is_true(burst_accepts >= 2 and burst_accepts <= 20,
                       "accepted lines for the burst: " .. burst_accepts .. "\n" .. srv:log())
        -- Then 100 requests, each on a new client connection to nginx.
        local mark = srv:mark()
        for i = 1, 100 do
            local r = get(ngx, "/hello")
            assert.equal(200, r.status, "request " .. i)
        end
        local later = count_accepted(srv, mark)
        assert.is_true(later <= 1, ("%d new FastCGI connections for 100 requests"):format(later))
    end)
end)

describe("nginx with examples/nginx.conf in front of a handler setting status and headers", function()
    local ngx
    before_each(function() ngx = select(2, start_pair(helpers.fixture("status"))) end)
    after_each(helpers.cleanup)

    it("passes the handler's status, Content-Type and custom headers to the client", function()
        for _, code in ipairs({ 200, 201, 404, 418, 503 }) do
            local r = get(ngx, "/?code=" .. code)
            assert.same({ code, "status " .. code, "text/plain; charset=utf-8", "1", { "a=1", "b=2" } },
                        { r.status, r.body, r.headers["content-type"], r.headers["x-one"],
                          r.headers["set-cookie"] })
        end
    end)
end)
