-- A real nginx in front of afcgi serving examples/index.lua, configured with
-- examples/nginx.conf itself (upstream keepalive, fastcgi_keep_conn on,
-- include fastcgi_params; only its two addresses are replaced): the
-- examples through nginx, checked over HTTP. What nginx itself passes on
-- (params, statuses and headers, bodies, streaming, parallel requests,
-- keepalive, a client going away) is checked in fronts_spec.lua, with every
-- other front.
local helpers = require "helpers"
local fronts = require "fronts"
local cjson = require "cjson"

local function get(ngx, path)
    return helpers.http_request(ngx.port, { method = "GET", path = path })
end

describe("nginx with examples/nginx.conf in front of examples/index.lua", function()
    local ngx
    before_each(function()
        local srv = helpers.start_server("examples/index.lua")
        ngx = fronts.nginx("127.0.0.1:" .. srv.port, "examples/nginx.conf", "8080")
    end)
    after_each(helpers.cleanup)

    it("serves the index page, /hello, /echo, and 404 for other paths", function()
        local index = get(ngx, "/")
        assert.equal(200, index.status)
        assert.equal("text/html; charset=utf-8", index.headers["content-type"])
        for _, link in ipairs({ '"/hello"', '"/sleep?ms=500"', '"/echo?a=1&amp;b=two"' }) do
            assert.truthy(index.body:find("href=" .. link, 1, true), "no link " .. link)
        end
        local hello = get(ngx, "/hello")
        assert.same({ 200, "Hello, world!\n" }, { hello.status, hello.body })
        local echo = get(ngx, "/echo?a=1&b=two%20words&c")
        assert.same({ 200, "application/json" }, { echo.status, echo.headers["content-type"] }, echo.body)
        local e = cjson.decode(echo.body)
        assert.same({ "GET", "a=1&b=two%20words&c", 0 }, { e.method, e.query, e.body_len })
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
end)
