-- OpenResty's output calls in a content handler (spec/fixtures/ngx_content.lua).
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"
local fc = require "fcgi_client"

describe("ngx output calls", function()
    local srv, c
    before_each(function()
        srv = helpers.start_server("ngx_content")
        c = helpers.connect(srv)
    end)
    after_each(helpers.cleanup)

    it("say, print, status, header, var, req, flush and exit", function()
        local r = c:request(1, fc.cgi_params("GET", "/say?v=7", {
            HTTP_USER_AGENT = "spec/1", HTTP_HOST = "Example.org:8080", HTTPS = "on",
            HTTP_COOKIE = "a=1; sid=xyz" }))
        assert.equal(201, r.status)
        assert.equal("text/plain", r.headers["content-type"])
        assert.same({ "a", "b" }, r.headers["x-multi"])
        assert.is_nil(r.headers["x-gone"])
        assert.equal("hello 42 true nil null array\n"
            .. "method=GET uri=/say args=v=7 ua=spec/1 host=example.org scheme=https status=201 "
            .. "ctype=text/plain\n"
            .. "v=7 header=spec/1 arg_v=7 cookie_sid=xyz\n"
            .. "after flush\n", r.body)
        srv:wait_log("attempt to set ngx.status after sending out response headers", 5)
        -- a variable read before is looked up again, in this request's params
        r = c:request(2, fc.cgi_params("GET", "/say?v=8", { HTTP_USER_AGENT = "spec/2" }))
        assert.truthy(r.body:find(" ua=spec/2 ", 1, true), r.body)
        assert.truthy(r.body:find("arg_v=8 cookie_sid=nil", 1, true), r.body)
    end)

    it("exit with a status, redirect, eof", function()
        local r = c:request(1, "/exit")
        assert.equal(403, r.status)
        r = c:request(2, "/redirect")
        assert.equal(301, r.status)
        assert.equal("/elsewhere", r.headers.location)
        r = c:request(3, "/eof")
        assert.equal("done\n", r.body)
        srv:wait_log("after eof: nil seen eof", 5)
    end)
end)
