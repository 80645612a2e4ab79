-- The handler API (req, res, afcgi.router, afcgi.multipart) through the
-- real server: fixture apps spec/fixtures/api_*.lua, asked over FastCGI by
-- the spec's own client, and over HTTP through nginx where the front matters.
local helpers = require "helpers"
local fc = require "fcgi_client"
local cjson = require "cjson"

local B = "----afcgiSpecBoundary"

-- A multipart/form-data body from { {name=, value=} or {name=, filename=,
-- type=, value=} }.
local function multipart_body(parts, boundary)
    boundary = boundary or B
    local out = {}
    for _, p in ipairs(parts) do
        local cd = ('form-data; name="%s"'):format(p.name)
        if p.filename then cd = cd .. ('; filename="%s"'):format(p.filename) end
        out[#out + 1] = "--" .. boundary .. "\r\nContent-Disposition: " .. cd .. "\r\n"
            .. (p.type and ("Content-Type: " .. p.type .. "\r\n") or "") .. "\r\n" .. p.value .. "\r\n"
    end
    out[#out + 1] = "--" .. boundary .. "--\r\n"
    return table.concat(out)
end

local ALL_BYTES = helpers.ALL_BYTES

-- One FastCGI request: method, uri ("/path?query"), opts.body,
-- opts.content_type, opts.params (extra or overriding params).
local function fcgi(srv, method, uri, opts)
    opts = opts or {}
    local body = opts.body or ""
    local params = fc.cgi_params(method, uri, opts.params, body ~= "" and #body or nil)
    if opts.content_type then params.CONTENT_TYPE = opts.content_type end
    local c = helpers.connect(srv)
    return c:request(1, params, body)
end

local function json_of(r)
    assert.equal("application/json", r.headers["content-type"], r.body)
    return cjson.decode(r.body)
end

describe("req", function()
    local srv
    before_each(function() srv = helpers.start_server("api_req", { args = { "--max-body", "64k" } }) end)
    after_each(helpers.cleanup)

    describe("fields", function()
        it("come from the params, with nil for what is absent or not a number", function()
            local v = json_of(fcgi(srv, "GET", "/fields"))
            assert.same({ scheme = "http", host = "localhost", remote_addr = "127.0.0.1",
                          remote_port = 54321, content_type = cjson.null, content_length = cjson.null,
                          cached = true }, v)
            v = json_of(fcgi(srv, "POST", "/fields", { body = "abc", content_type = "text/plain",
                                                       params = { HTTPS = "on", HTTP_HOST = "Example.COM:8443" } }))
            assert.same({ "https", "example.com", "text/plain", 3 },
                        { v.scheme, v.host, v.content_type, v.content_length })
            v = json_of(fcgi(srv, "GET", "/fields", { params = {
                REQUEST_SCHEME = "https", HTTP_HOST = "[::1]:8080", CONTENT_LENGTH = "12abc",
                REMOTE_PORT = "" } }))
            assert.same({ "https", "[::1]", cjson.null, cjson.null },
                        { v.scheme, v.host, v.content_length, v.remote_port })
        end)

        it("give req.ctx as one table per request", function()
            assert.same({ n = 2, same = true }, json_of(fcgi(srv, "GET", "/ctx")))
            assert.same({ n = 2, same = true }, json_of(fcgi(srv, "GET", "/ctx")))
        end)
    end)

    describe("headers", function()
        local params = { HTTP_X_CUSTOM_THING = "yes", HTTP_USER_AGENT = "spec/1.0", HTTP_ACCEPT = "*/*",
                         CONTENT_TYPE = "text/plain; charset=utf-8", CONTENT_LENGTH = "" }

        it("are found by req:header and req.headers in any case and with - or _", function()
            for _, name in ipairs({ "X-Custom-Thing", "x-custom-thing", "X_CUSTOM_THING", "x-CUSTOM_thing" }) do
                local v = json_of(fcgi(srv, "GET", "/headers?name=" .. name, { params = params }))
                assert.equal("yes", v.header, name)
                assert.equal("yes", v.field, name)
            end
            local v = json_of(fcgi(srv, "GET", "/headers?name=Content-Type", { params = params }))
            assert.same({ "text/plain; charset=utf-8", "text/plain; charset=utf-8" }, { v.header, v.field })
        end)

        it("list every HTTP_* param by lower-case name, and nothing for absent ones", function()
            local v = json_of(fcgi(srv, "GET", "/headers?name=Referer", { params = params }))
            assert.same({ cjson.null, cjson.null }, { v.header, v.field })
            assert.same({ ["x-custom-thing"] = "yes", ["user-agent"] = "spec/1.0", accept = "*/*",
                          ["content-type"] = "text/plain; charset=utf-8" }, v.all)
        end)
    end)

    it("decodes the query with req:args, once", function()
        local v = json_of(fcgi(srv, "GET", "/args?a=1&b=x+y&a=2&flag&e=%E2%82%AC&bad=%zz&=x"))
        assert.same({ args = { a = { "1", "2" }, b = "x y", flag = true, e = "€", bad = "%zz" },
                      err = cjson.null, same = true }, v)
    end)

    describe("req:form", function()
        it("decodes an urlencoded body, with a charset parameter too", function()
            local v = json_of(fcgi(srv, "POST", "/form", {
                body = "name=Zo%C3%AB+D&tags=a&tags=b&raw=€",
                content_type = "application/x-www-form-urlencoded; charset=UTF-8" }))
            assert.same({ form = { name = "Zoë D", tags = { "a", "b" }, raw = "€" }, again = true }, v)
        end)

        it("returns nil, 'wrong content type' for another type", function()
            local r = fcgi(srv, "POST", "/form", { body = "a=1", content_type = "text/plain" })
            assert.same({ 415, "wrong content type" }, { r.status, r.body })
            r = fcgi(srv, "POST", "/form", { body = "a=1" })
            assert.same({ 415, "wrong content type" }, { r.status, r.body })
        end)

        it("returns nil, 'too large' past --max-body", function()
            local r = fcgi(srv, "POST", "/form", { body = "a=" .. ("x"):rep(70000),
                                                   content_type = "application/x-www-form-urlencoded" })
            assert.same({ 413, "too large" }, { r.status, r.body })
        end)
    end)

    describe("req:json", function()
        it("decodes a JSON body, unicode included", function()
            local v = json_of(fcgi(srv, "POST", "/json", { body = '{"name":"Zoë \\u20ac","n":[1,2.5,true,null]}',
                                                           content_type = "application/json" }))
            assert.same({ value = { name = "Zoë €", n = { 1, 2.5, true, cjson.null } }, type = "table" }, v)
            v = json_of(fcgi(srv, "POST", "/json", { body = "[]", content_type = "application/vnd.api+json" }))
            assert.equal("table", v.type)
        end)

        it("returns nil, 'invalid json: ...' for a body that is not JSON", function()
            for _, body in ipairs({ "{", "{'a':1}", "NaN", "", '{"a":1} trailing' }) do
                local r = fcgi(srv, "POST", "/json", { body = body, content_type = "application/json" })
                assert.equal(400, r.status, body)
                assert.matches("^invalid json: .", r.body)
            end
        end)

        it("returns nil, 'wrong content type' without a JSON Content-Type", function()
            local r = fcgi(srv, "POST", "/json", { body = "{}", content_type = "text/plain" })
            assert.same({ 415, "wrong content type" }, { r.status, r.body })
        end)
    end)

    it("reads unicode and binary bodies byte for byte", function()
        for _, body in ipairs({ "héllo wörld € 😀", ALL_BYTES, ALL_BYTES:rep(200) }) do
            local r = fcgi(srv, "POST", "/body", { body = body })
            assert.equal(200, r.status)
            assert.equal(tostring(#body), r.headers["x-length"])
            assert.is_true(r.body == body, "body differs")
        end
    end)

    it("parses cookies from the Cookie header", function()
        local v = json_of(fcgi(srv, "GET", "/cookies",
                               { params = { HTTP_COOKIE = 'sid=abc123; theme="dark"; sid=x' } }))
        assert.same({ cookies = { sid = "abc123", theme = "dark" }, sid = "abc123" }, v)
        v = json_of(fcgi(srv, "GET", "/cookies"))
        assert.same({ cookies = {}, sid = cjson.null }, v)
    end)

    describe("req:multipart", function()
        local parts = {
            { name = "title", value = "Grüße" },
            { name = "file", filename = "data.bin", type = "application/octet-stream", value = ALL_BYTES:rep(100) },
            { name = "note", filename = "note.txt", value = "" },
        }

        it("collects fields, and files into temporary files", function()
            local v = json_of(fcgi(srv, "POST", "/upload", {
                body = multipart_body(parts), content_type = "multipart/form-data; boundary=" .. B }))
            assert.equal("Grüße", v.title)
            assert.same({ "data.bin", "application/octet-stream", 25600, true },
                        { v.file.filename, v.file.content_type, v.file.size, v.file.tmp })
            assert.is_true(v.file.content == ALL_BYTES:rep(100), "file content differs")
            assert.same({ "note.txt", cjson.null, 0, "" },
                        { v.note.filename, v.note.content_type, v.note.size, v.note.content })
        end)

        it("streams parts to handlers, and stops where a handler says", function()
            local v = json_of(fcgi(srv, "POST", "/stream", {
                body = multipart_body(parts), content_type = "multipart/form-data; boundary=" .. B }))
            assert.same({ events = { "part title", "end title", "part file", "end file", "part note", "end note" },
                          sizes = { title = 7, file = 25600, note = 0 } }, v)
            local r = fcgi(srv, "POST", "/stream", {
                body = multipart_body({ parts[1], { name = "stop", value = "x" }, parts[2] }),
                content_type = "multipart/form-data; boundary=" .. B })
            assert.same({ 400, "stopped at stop" }, { r.status, r.body })
        end)

        it("parses a body read_body already took", function()
            local v = json_of(fcgi(srv, "POST", "/read_then_multipart", {
                body = multipart_body({ parts[1] }), content_type = "multipart/form-data; boundary=" .. B }))
            assert.same({ title = "Grüße" }, v)
        end)

        it("returns nil, err for malformed bodies, other types and oversized ones", function()
            local cases = {
                { multipart_body(parts):sub(1, -10), "multipart/form-data; boundary=" .. B,
                  "malformed multipart: unexpected end of body" },
                { multipart_body(parts), "multipart/form-data; boundary=other",
                  "malformed multipart: unexpected end of body" },
                { multipart_body(parts), "multipart/form-data", "no boundary" },
                { multipart_body(parts), "application/json", "not multipart/form-data" },
                { multipart_body({ { name = "f", filename = "big", value = ("x"):rep(70000) } }),
                  "multipart/form-data; boundary=" .. B, "too large" },
            }
            for _, case in ipairs(cases) do
                local r = fcgi(srv, "POST", "/upload", { body = case[1], content_type = case[2] })
                assert.same({ 400, case[3] }, { r.status, r.body })
            end
        end)
    end)
end)

describe("res", function()
    local srv
    before_each(function() srv = helpers.start_server("api_res") end)
    after_each(helpers.cleanup)

    it("res:json encodes the value with Content-Type application/json and a status", function()
        local r = fcgi(srv, "GET", "/json")
        assert.same({ 200, { name = "Zoë", list = { 1, 2, 3 }, nested = { ok = true } } },
                    { r.status, json_of(r) })
        r = fcgi(srv, "GET", "/json_status")
        assert.same({ 201, { created = 7 } }, { r.status, json_of(r) })
    end)

    it("res:json raises on a value JSON cannot hold", function()
        local mark = srv:mark()
        assert.equal(500, fcgi(srv, "GET", "/json_bad").status)
        srv:wait_log("res:json: cannot encode", 5, mark)
    end)

    it("res:redirect answers 302 or the given status with Location", function()
        local r = fcgi(srv, "GET", "/redirect")
        assert.same({ 302, "/elsewhere?x=1" }, { r.status, r.headers.location })
        r = fcgi(srv, "GET", "/redirect?status=301")
        assert.same({ 301, "/elsewhere?x=1" }, { r.status, r.headers.location })
        r = fcgi(srv, "GET", "/redirect?status=200")
        assert.equal(500, r.status)
    end)

    it("res:redirect refuses CR and LF, so no header can be injected", function()
        local mark = srv:mark()
        local r = fcgi(srv, "GET", "/redirect_crlf")
        assert.same({ 500, nil, nil }, { r.status, r.headers.location, r.headers["set-cookie"] })
        srv:wait_log("CR, LF or NUL in url", 5, mark)
    end)

    it("res:cookie adds one Set-Cookie per call", function()
        local r = fcgi(srv, "GET", "/cookies")
        assert.same({ "sid=abc123; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax",
                      "theme=dark; Path=/app; Expires=Thu, 01 Jan 1970 00:00:00 GMT" }, r.headers["set-cookie"])
        assert.equal("two cookies", r.body)
        local mark = srv:mark()
        assert.equal(500, fcgi(srv, "GET", "/cookie_bad").status)
        srv:wait_log("res:cookie: invalid cookie value for sid", 5, mark)
    end)

    it("res:error writes the standard reason as text or JSON", function()
        local r = fcgi(srv, "GET", "/error?status=404")
        assert.same({ 404, "text/plain; charset=utf-8", "404 Not Found\n" },
                    { r.status, r.headers["content-type"], r.body })
        r = fcgi(srv, "GET", "/error?status=503&message=maintenance")
        assert.same({ 503, "503 Service Unavailable\nmaintenance\n" }, { r.status, r.body })
        r = fcgi(srv, "GET", "/error?status=422&format=json&message=bad")
        assert.same({ 422, { status = 422, error = "Unprocessable Content", message = "bad" } },
                    { r.status, json_of(r) })
        assert.equal(500, fcgi(srv, "GET", "/error?status=200").status)   -- not an error status: raises
    end)

    it("res helpers replace the Content-Type and Location set before them", function()
        local r = fcgi(srv, "GET", "/replace")
        assert.same({ 409, "text/plain; charset=utf-8", "/new", "409 Conflict\nconflict\n" },
                    { r.status, r.headers["content-type"], r.headers.location, r.body })
        r = fcgi(srv, "GET", "/replace_json")
        assert.same({ "application/json", { ok = true } }, { r.headers["content-type"], json_of(r) })
    end)

    it("res:sendfile and res:accel_redirect hand the body to the front", function()
        local r = fcgi(srv, "GET", "/sendfile")
        assert.same({ "/srv/files/report.pdf", "" }, { r.headers["x-sendfile"], r.body })
        r = fcgi(srv, "GET", "/accel")
        assert.same({ "/protected/file.txt", "" }, { r.headers["x-accel-redirect"], r.body })
        local mark = srv:mark()
        assert.equal(500, fcgi(srv, "GET", "/accel_bad").status)
        srv:wait_log("absolute path expected", 5, mark)
    end)

    it("needs lua-cjson only for JSON: without it the rest works and res:json raises", function()
        local stdlib = require "posix.stdlib"
        local old = os.getenv("LUA_CPATH")
        stdlib.setenv("LUA_CPATH", "/nonexistent/?.so")   -- the server finds no cjson.so
        local ok, bare = pcall(helpers.start_server, "api_res")
        stdlib.setenv("LUA_CPATH", old)                   -- nil unsets it again
        assert(ok, bare)
        assert.equal("two cookies", fcgi(bare, "GET", "/cookies").body)
        assert.equal("404 Not Found\n", fcgi(bare, "GET", "/error?status=404").body)
        local mark = bare:mark()
        assert.equal(500, fcgi(bare, "GET", "/json").status)
        bare:wait_log("JSON needs lua%-cjson", 5, mark)
    end)

    it("writes unicode and binary bytes unchanged", function()
        local r = fcgi(srv, "GET", "/bytes")
        assert.is_true(r.body == "héllo wörld €\n" .. ALL_BYTES, "body differs")
    end)
end)

describe("afcgi.router in the server", function()
    local srv
    before_each(function() srv = helpers.start_server("api_router") end)
    after_each(helpers.cleanup)

    it("runs middleware in order before the route and in reverse after it", function()
        local mark = srv:mark()
        local r = fcgi(srv, "GET", "/")
        assert.same({ 200, "home trace=log,cors", "*" },
                    { r.status, r.body, r.headers["access-control-allow-origin"] })
        srv:wait_log("access GET / 200 trace=log,cors,home\n", 5, mark)
    end)

    it("routes path params, wildcards and nested mounts", function()
        assert.equal("file css/site.css", fcgi(srv, "GET", "/files/css/site.css").body)
        assert.same({ id = "42" }, json_of(fcgi(srv, "GET", "/api/users/42")))
        assert.same({ user = "42", post = "7" }, json_of(fcgi(srv, "GET", "/api/users/42/posts/7")))
        local r = fcgi(srv, "POST", "/api/users", { body = '{"name":"ann"}', content_type = "application/json" })
        assert.same({ 201, { created = "ann" } }, { r.status, json_of(r) })
    end)

    it("answers a JSON 400 with the decoder's message for invalid JSON", function()
        local r = fcgi(srv, "POST", "/api/users", { body = '{"name":', content_type = "application/json" })
        local v = json_of(r)
        assert.same({ 400, 400, "Bad Request" }, { r.status, v.status, v.error })
        assert.matches("^invalid json: ", v.message)
    end)

    it("answers 404, in JSON under the JSON sub-router", function()
        local mark = srv:mark()
        local r = fcgi(srv, "GET", "/nope")
        assert.same({ 404, "404 Not Found\n", "*" }, { r.status, r.body, r.headers["access-control-allow-origin"] })
        srv:wait_log("access GET /nope 404", 5, mark)
        r = fcgi(srv, "GET", "/api/nope")
        assert.same({ 404, { status = 404, error = "Not Found" } }, { r.status, json_of(r) })
    end)

    it("answers 405 with Allow", function()
        local r = fcgi(srv, "DELETE", "/api/users")
        assert.same({ 405, "POST", "Method Not Allowed" }, { r.status, r.headers.allow, json_of(r).error })
        r = fcgi(srv, "POST", "/")
        assert.same({ 405, "GET, HEAD" }, { r.status, r.headers.allow })
    end)

    it("lets CORS middleware answer a preflight without reaching the routes", function()
        local r = fcgi(srv, "OPTIONS", "/api/users", { params = { HTTP_ACCESS_CONTROL_REQUEST_METHOD = "POST",
                                                                   HTTP_ORIGIN = "http://example.com" } })
        assert.same({ 204, "*", "GET, POST, DELETE", "" },
                    { r.status, r.headers["access-control-allow-origin"],
                      r.headers["access-control-allow-methods"], r.body })
    end)

    it("guards a mounted router with its own auth middleware", function()
        local r = fcgi(srv, "GET", "/admin/stats")
        assert.same({ 401, "Bearer", "401 Unauthorized\n" }, { r.status, r.headers["www-authenticate"], r.body })
        r = fcgi(srv, "GET", "/admin/stats", { params = { HTTP_AUTHORIZATION = "Bearer s3cret" } })
        assert.same({ 200, "stats trace=log,cors,auth" }, { r.status, r.body })
        r = fcgi(srv, "DELETE", "/admin/cache", { params = { HTTP_AUTHORIZATION = "Bearer s3cret" } })
        assert.equal(204, r.status)
        assert.equal(401, fcgi(srv, "DELETE", "/admin/cache").status)
    end)
end)

describe("the API behind nginx", function()
    local srv, ngx
    local files

    -- nginx with an internal /protected/ location for X-Accel-Redirect.
    local CONF = helpers.NGINX_CONF:gsub("        location / {", [[
        location /protected/ {
            internal;
            alias ${files}/;
        }
        location / {]])

    before_each(function()
        files = assert(require("posix.stdlib").mkdtemp("/tmp/afcgi-files-XXXXXX"))
        helpers.defer(function() os.execute("rm -rf '" .. files .. "'") end)
        local f = assert(io.open(files .. "/file.txt", "wb"))
        f:write("served by nginx\n")
        f:close()
        srv = helpers.start_server(helpers.fixture("api_res"))
        ngx = helpers.start_nginx(CONF, { upstream = srv.addr, files = files })
    end)
    after_each(helpers.cleanup)

    it("serves the file an X-Accel-Redirect names", function()
        local r = helpers.http_request(ngx.port, { path = "/accel?f=file.txt" })
        assert.same({ 200, "served by nginx\n" }, { r.status, r.body })
        assert.equal("text/plain", r.headers["content-type"])
        assert.is_nil(r.headers["x-accel-redirect"])
    end)

    it("passes both Set-Cookie headers and the Location of a redirect", function()
        local r = helpers.http_request(ngx.port, { path = "/cookies" })
        assert.same({ "sid=abc123; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax",
                      "theme=dark; Path=/app; Expires=Thu, 01 Jan 1970 00:00:00 GMT" }, r.headers["set-cookie"])
        r = helpers.http_request(ngx.port, { path = "/redirect" })
        assert.same({ 302, "/elsewhere?x=1" }, { r.status, r.headers.location })
    end)
end)

describe("real HTTP headers through nginx", function()
    local srv, ngx
    before_each(function()
        srv = helpers.start_server(helpers.fixture("api_req"))
        ngx = helpers.start_nginx(nil, { upstream = srv.addr })
    end)
    after_each(helpers.cleanup)

    it("reach req:header and req.headers case-insensitively", function()
        local r = helpers.http_request(ngx.port, { path = "/headers?name=x-request-TAG",
                                                   headers = { ["X-Request-Tag"] = "t1", Cookie = "sid=n1" } })
        local v = json_of(r)
        assert.same({ "t1", "t1", "sid=n1" }, { v.header, v.field, v.all.cookie })
    end)

    it("carry a multipart upload to req:multipart", function()
        local body = multipart_body({ { name = "title", value = "via nginx" },
                                      { name = "file", filename = "f.bin", type = "application/octet-stream",
                                        value = ALL_BYTES:rep(1000) } })
        local r = helpers.http_request(ngx.port, {
            method = "POST", path = "/upload", body = body,
            headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. B } })
        local v = json_of(r)
        assert.equal("via nginx", v.title)
        assert.same({ 256000, true }, { v.file.size, v.file.content == ALL_BYTES:rep(1000) })
    end)
end)

describe("examples", function()
    after_each(helpers.cleanup)

    local function start(name, args)
        return helpers.start_server("examples/" .. name .. ".lua", { args = args })
    end

    it("forms.lua decodes the form and the query and answers each failure", function()
        local srv = start("forms")
        local form = "application/x-www-form-urlencoded"
        assert.equal(200, fcgi(srv, "GET", "/").status)
        local r = fcgi(srv, "POST", "/", { body = "name=Zo%C3%AB&topics=lua&topics=c", content_type = form })
        assert.matches("Hello, Zoë! Topics: lua, c.", r.body, 1, true)
        r = fcgi(srv, "POST", "/", { body = "name=%3Cb%3E&topics=c", content_type = form })
        assert.matches("Hello, &lt;b&gt;! Topics: c.", r.body, 1, true)
        assert.equal(422, fcgi(srv, "POST", "/", { body = "name=+", content_type = form }).status)
        assert.equal(415, fcgi(srv, "POST", "/", { body = "name=x", content_type = "text/plain" }).status)
        assert.equal("You searched for: a b\n", fcgi(srv, "GET", "/search?q=a+b&q=c").body)
        assert.equal(400, fcgi(srv, "GET", "/search").status)
        assert.same({ 405, "GET, HEAD, POST" }, { fcgi(srv, "PUT", "/").status, fcgi(srv, "PUT", "/").headers.allow })
    end)

    it("upload.lua takes a file into a temporary file or streams it, and answers each failure", function()
        local srv = start("upload")
        local ct = "multipart/form-data; boundary=" .. B
        local body = multipart_body({ { name = "title", value = "t" },
                                      { name = "file", filename = "a.bin", type = "application/x-demo",
                                        value = ALL_BYTES } })
        local r = fcgi(srv, "POST", "/upload", { body = body, content_type = ct })
        assert.equal("title: t\nfile: a.bin (application/x-demo), 256 bytes\n"
                     .. "first bytes: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \n", r.body)
        r = fcgi(srv, "POST", "/stream", { body = body, content_type = ct })
        assert.matches("^a.bin: 256 bytes, sample sum 0\n$", r.body)
        local no_file = multipart_body({ { name = "title", value = "t" } })
        assert.equal(422, fcgi(srv, "POST", "/upload", { body = no_file, content_type = ct }).status)
        assert.equal(422, fcgi(srv, "POST", "/stream", { body = no_file, content_type = ct }).status)
        r = fcgi(srv, "POST", "/upload", { body = body:sub(1, -5), content_type = ct })
        assert.same({ 400, "400 Bad Request\nmalformed multipart: unexpected end of body\n" }, { r.status, r.body })
        assert.equal(415, fcgi(srv, "POST", "/upload", { body = "x", content_type = "text/plain" }).status)
    end)

    it("cookies.lua counts visits, escapes text, sets two cookies and deletes them", function()
        local srv = start("cookies")
        local r = fcgi(srv, "GET", "/", { params = { HTTP_COOKIE = "visits=41; name=Zo%C3%AB" } })
        assert.equal("visits=42; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax", r.headers["set-cookie"])
        assert.matches("Name: Zoë\n", r.body, 1, true)
        r = fcgi(srv, "GET", "/", { params = { HTTP_COOKIE = "visits=-3.5" } })
        assert.matches("^visits=1;", r.headers["set-cookie"])
        r = fcgi(srv, "GET", "/name?value=Zo%C3%AB+%3B")
        assert.same({ 302, "/", "name=Zo%C3%AB%20%3B; Path=/; Max-Age=31536000; SameSite=Lax" },
                    { r.status, r.headers.location, r.headers["set-cookie"] })
        assert.equal(400, fcgi(srv, "GET", "/name").status)
        r = fcgi(srv, "GET", "/login")
        assert.equal(303, r.status)
        assert.matches("^session=%x+; Path=/; HttpOnly; SameSite=Strict$", r.headers["set-cookie"][1])
        assert.equal("logged_in=1; Path=/; SameSite=Strict", r.headers["set-cookie"][2])
        r = fcgi(srv, "GET", "/logout")
        assert.equal(3, #r.headers["set-cookie"])
        assert.equal("session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT", r.headers["set-cookie"][1])
    end)

    it("json_api.lua creates, reads, changes and deletes, with JSON errors", function()
        local srv = start("json_api")
        local function call(method, uri, body, ctype)
            return fcgi(srv, method, uri, { body = body, content_type = ctype or (body and "application/json") })
        end
        assert.equal("[]", call("GET", "/todos").body)
        local r = call("POST", "/todos", '{"title":"write docs"}')
        assert.same({ 201, "/todos/1", { id = 1, title = "write docs", done = false } },
                    { r.status, r.headers.location, json_of(r) })
        r = call("PATCH", "/todos/1", '{"done":true}')
        assert.same({ id = 1, title = "write docs", done = true }, json_of(r))
        assert.same({ { id = 1, title = "write docs", done = true } }, json_of(call("GET", "/todos")))
        assert.equal(415, call("POST", "/todos", "{}", "text/plain").status)
        r = call("POST", "/todos", "{oops")
        assert.same({ 400, "Bad Request" }, { r.status, json_of(r).error })
        assert.matches("^invalid json: ", json_of(r).message)
        assert.equal(422, call("POST", "/todos", "[1]").status)
        assert.equal(422, call("POST", "/todos", '{"title":""}').status)
        assert.equal(422, call("PATCH", "/todos/1", '{"done":"yes"}').status)
        r = call("PUT", "/todos")
        assert.same({ 405, "GET, HEAD, POST" }, { r.status, r.headers.allow })
        assert.equal(204, call("DELETE", "/todos/1").status)
        r = call("GET", "/todos/1")
        assert.same({ 404, { status = 404, error = "Not Found", message = "no todo 1" } }, { r.status, json_of(r) })
        r = call("OPTIONS", "/todos/1")
        assert.same({ 204, "*" }, { r.status, r.headers["access-control-allow-origin"] })
    end)

    it("router.lua routes params, redirects, files, the admin mount and 404/405", function()
        local srv = start("router", { "--log-level", "info" })
        local mark = srv:mark()
        assert.equal("Hello, ann!\n", fcgi(srv, "GET", "/hello/ann").body)
        srv:wait_log("GET /hello/ann %-> 200 in [%d.]+ ms", 5, mark)
        local r = fcgi(srv, "GET", "/old")
        assert.same({ 301, "/hello/world" }, { r.status, r.headers.location })
        r = fcgi(srv, "GET", "/files/docs/report.pdf")
        assert.same({ "/protected/docs/report.pdf", "application/pdf" },
                    { r.headers["x-accel-redirect"], r.headers["content-type"] })
        assert.equal(400, fcgi(srv, "GET", "/files/../etc/passwd").status)
        r = fcgi(srv, "GET", "/admin/")
        assert.same({ 401, 'Bearer realm="admin"' }, { r.status, r.headers["www-authenticate"] })
        local auth = { HTTP_AUTHORIZATION = "Bearer letmein" }
        assert.equal("admin home\n", fcgi(srv, "GET", "/admin/", { params = auth }).body)
        r = fcgi(srv, "GET", "/admin/reload", { params = auth })
        assert.same({ 405, "POST" }, { r.status, r.headers.allow })
        r = fcgi(srv, "GET", "/nope<script>")
        assert.equal(404, r.status)
        assert.matches("Nothing at /nopescript", r.body, 1, true)
    end)
end)
