-- afcgi.router: matching, params, wildcards, 404/405, mounts and middleware,
-- on stand-in req and res tables (spec/integration/api_spec.lua runs it in the server).
package.path = "lua/?.lua;" .. package.path
local router = require "afcgi.router"

local function fake_req(method, path)
    return { method = method, path = path, ctx = {} }
end

-- A res that records what the router and handlers do to it.
local function fake_res()
    local res = { headers = {}, body = {}, code = 200 }
    function res:status(code) self.code = code end
    function res:header(name, value) self.headers[name] = value end
    function res:write(...) for _, s in ipairs({ ... }) do self.body[#self.body + 1] = tostring(s) end end
    function res:error(code, message, format)
        self.code, self.error_format = code, format or "text"
        self:write(code, message and (" " .. message) or "")
    end
    return res
end

-- Runs app on (method, path); returns the res with body joined.
local function run(app, method, path)
    local res = fake_res()
    app(fake_req(method, path), res)
    res.text = table.concat(res.body)
    return res
end

-- A handler writing its name and its params (sorted k=v).
local function says(name)
    return function(_, res, params)
        local keys = {}
        for k in pairs(params) do keys[#keys + 1] = k end
        table.sort(keys)
        local out = { name }
        for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. params[k] end
        res:write(table.concat(out, " "))
    end
end

local function raises_here(fn, pattern)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    assert.matches("^spec/unit/router_spec%.lua:%d+: .-" .. pattern, err)
end

describe("router matching", function()
    local app
    before_each(function()
        app = router.new()
        app:get("/", says("root"))
        app:get("/users", says("list"))
        app:get("/users/new", says("new"))
        app:get("/users/:id", says("show"))
        app:get("/users/:id/posts/:post", says("post"))
        app:get("/static/*path", says("static"))
    end)

    it("runs the first route whose pattern and method match, with its params", function()
        assert.equal("root", run(app, "GET", "/").text)
        assert.equal("list", run(app, "GET", "/users").text)
        assert.equal("new", run(app, "GET", "/users/new").text)
        assert.equal("show id=42", run(app, "GET", "/users/42").text)
        assert.equal("post id=7 post=héllo", run(app, "GET", "/users/7/posts/héllo").text)
    end)

    it("gives a wildcard the rest of the path, possibly empty", function()
        assert.equal("static path=css/site/a.css", run(app, "GET", "/static/css/site/a.css").text)
        assert.equal("static path=", run(app, "GET", "/static/").text)
        assert.equal("static path=", run(app, "GET", "/static").text)
    end)

    it("answers 404 for a trailing slash, an empty segment or an unknown path", function()
        for _, path in ipairs({ "/users/", "/users//posts/1", "/nope", "/users/1/posts" }) do
            local res = run(app, "GET", path)
            assert.equal(404, res.code, path)
            assert.equal("404", res.text)
        end
    end)

    it("answers 405 with the sorted Allow list when only other methods match", function()
        app:post("/users", says("create"))
        app:route({ "put", "DELETE" }, "/users/:id", says("change"))
        local res = run(app, "DELETE", "/users")
        assert.same({ 405, "GET, HEAD, POST" }, { res.code, res.headers.Allow })
        res = run(app, "PATCH", "/users/3")
        assert.same({ 405, "DELETE, GET, HEAD, PUT" }, { res.code, res.headers.Allow })
        assert.equal("change id=3", run(app, "PUT", "/users/3").text)
        assert.equal("create", run(app, "POST", "/users").text)
    end)

    it("runs GET routes for HEAD, and any() and '*' for every method", function()
        app:any("/any", says("any"))
        app:route("*", "/star", says("star"))
        assert.equal("list", run(app, "HEAD", "/users").text)
        assert.equal("any", run(app, "PROPFIND", "/any").text)
        assert.equal("star", run(app, "DELETE", "/star").text)
    end)

    it("uses custom 404 and 405 handlers", function()
        app:not_found(function(req, res) res:status(404); res:write("no ", req.path) end)
        app:method_not_allowed(function(_, res, allowed)
            res:status(405)
            res:write(table.concat(allowed, "+"))
        end)
        local res = run(app, "GET", "/missing")
        assert.same({ 404, "no /missing" }, { res.code, res.text })
        res = run(app, "POST", "/users")
        assert.same({ 405, "GET+HEAD", "GET, HEAD" }, { res.code, res.text, res.headers.Allow })
    end)

    it("gives JSON error bodies with errors = \"json\"", function()
        local api = router.new({ errors = "json" })
        api:get("/x", says("x"))
        assert.same({ 404, "json" }, { run(api, "GET", "/y").code, run(api, "GET", "/y").error_format })
        assert.same({ 405, "json" }, { run(api, "POST", "/x").code, run(api, "POST", "/x").error_format })
        assert.equal("text", run(app, "GET", "/y").error_format)
    end)

    it("is a handler itself, and gives a plain function with handler()", function()
        local res = fake_res()
        app:handler()(fake_req("GET", "/users/9"), res)
        assert.equal("show id=9", table.concat(res.body))
        assert.is_true(router.is_router(app))
        assert.is_false(router.is_router({}))
    end)
end)

describe("router mounts", function()
    it("routes the rest of the path in the sub-router, with the prefix's params", function()
        local users = router.new()
        users:get("/", says("index"))
        users:get("/:id", says("user"))
        local posts = router.new()
        posts:get("/:post", says("post"))
        users:mount("/:id/posts", posts)
        local app = router.new()
        app:mount("/api/v1/users/", users)
        app:get("/api/v1/other", says("other"))
        assert.equal("index", run(app, "GET", "/api/v1/users").text)
        assert.equal("index", run(app, "GET", "/api/v1/users/").text)
        assert.equal("user id=5", run(app, "GET", "/api/v1/users/5").text)
        assert.equal("post id=5 post=9", run(app, "GET", "/api/v1/users/5/posts/9").text)
        assert.equal("other", run(app, "GET", "/api/v1/other").text)
        assert.equal(404, run(app, "GET", "/api/v1/usersX").code)
    end)

    it("lets the sub-router answer 404 and 405 for its paths", function()
        local sub = router.new()
        sub:post("/only-post", says("p"))
        sub:not_found(function(_, res) res:status(404); res:write("sub 404") end)
        local app = router.new()
        app:mount("/sub", sub)
        assert.equal("sub 404", run(app, "GET", "/sub/missing").text)
        local res = run(app, "GET", "/sub/only-post")
        assert.same({ 405, "POST" }, { res.code, res.headers.Allow })
    end)

    it("can mount at / behind earlier routes", function()
        local sub = router.new()
        sub:get("/x", says("sub x"))
        local app = router.new()
        app:get("/x", says("app x"))
        app:mount("/", sub)
        assert.equal("app x", run(app, "GET", "/x").text)
        app = router.new()
        app:mount("/", sub)
        assert.equal("sub x", run(app, "GET", "/x").text)
    end)
end)

describe("router middleware", function()
    it("runs in the order added before the route and in reverse after it", function()
        local log = {}
        local app = router.new()
        for _, name in ipairs({ "a", "b" }) do
            app:use(function(req, _, next)
                log[#log + 1] = name .. " before " .. req.path
                next()
                log[#log + 1] = name .. " after"
            end)
        end
        app:get("/x", function() log[#log + 1] = "route" end)
        run(app, "GET", "/x")
        assert.same({ "a before /x", "b before /x", "route", "b after", "a after" }, log)
    end)

    it("wraps 404 and 405 answers too", function()
        local seen = {}
        local app = router.new()
        app:use(function(_, res, next) next(); seen[#seen + 1] = res.code end)
        app:get("/x", says("x"))
        run(app, "GET", "/nope")
        run(app, "POST", "/x")
        assert.same({ 404, 405 }, seen)
    end)

    it("answers the request itself by not calling next", function()
        local app = router.new()
        app:use(function(req, res, next)
            if req.path ~= "/public" then
                res:status(401)
                res:write("denied")
                return
            end
            next()
        end)
        local ran = false
        app:get("/private", function() ran = true end)
        app:get("/public", says("public"))
        local res = run(app, "GET", "/private")
        assert.same({ 401, "denied", false }, { res.code, res.text, ran })
        assert.equal("public", run(app, "GET", "/public").text)
    end)

    it("runs a sub-router's middleware only for its paths, inside the parent's", function()
        local log = {}
        local function mw(name)
            return function(_, _, next) log[#log + 1] = name; next() end
        end
        local sub = router.new():use(mw("sub"))
        sub:get("/y", function() log[#log + 1] = "route" end)
        local app = router.new():use(mw("app"))
        app:mount("/sub", sub)
        app:get("/x", function() log[#log + 1] = "x" end)
        run(app, "GET", "/sub/y")
        run(app, "GET", "/x")
        assert.same({ "app", "sub", "route", "app", "x" }, log)
    end)

    it("passes req.ctx from middleware to the route", function()
        local app = router.new()
        app:use(function(req, _, next) req.ctx.user = "ann"; next() end)
        app:get("/me", function(req, res) res:write(req.ctx.user) end)
        assert.equal("ann", run(app, "GET", "/me").text)
    end)

    it("raises when next is called twice", function()
        local app = router.new()
        app:use(function(_, _, next) next(); next() end)
        app:get("/", says("r"))
        assert.error_matches(function() run(app, "GET", "/") end, "next%(%) called twice")
    end)
end)

describe("router definitions", function()
    it("raise at the caller on bad patterns and handlers", function()
        local app = router.new()
        raises_here(function() app:get("users", says("x")) end,
                    "bad argument #1 to 'get' %(path pattern expected")
        raises_here(function() app:get("/x", nil) end,
                    "bad argument #2 to 'get' %(handler function expected, got nil%)")
        raises_here(function() app:get("/*rest/more", says("x")) end, "must be the last segment")
        raises_here(function() app:get("/:1bad", says("x")) end, "bad parameter name")
        raises_here(function() app:get("/:id/:id", says("x")) end, "repeated parameter id")
        raises_here(function() app:route(42, "/", says("x")) end, "bad argument #1 to 'route'")
        raises_here(function() app:mount("/x", {}) end, "bad argument #2 to 'mount' %(router expected%)")
        raises_here(function() app:mount("/x/*rest", router.new()) end, "must be the last segment")
        raises_here(function() router.new({ errors = "xml" }) end, "errors must be")
        raises_here(function() app:use("nope") end, "bad argument #1 to 'use'")
    end)

    it("return the router, so calls chain", function()
        local app = router.new():get("/a", says("a")):post("/b", says("b"))
        assert.equal("a", run(app, "GET", "/a").text)
        assert.equal("b", run(app, "POST", "/b").text)
    end)
end)

describe("router.new({ path = \"request\" })", function()
    -- A req behind a front-controller rewrite: req.path is the script,
    -- req.request_path (nil when rejected) the path the client asked for.
    local function rewritten(request_path, request_uri)
        local req = fake_req("GET", "/index.php")
        req.request_path = request_path
        req.param = function(_, name) return name == "REQUEST_URI" and request_uri or nil end
        return req
    end

    local function app_of(opts)
        local seen = {}
        local app = router.new(opts)
        app:use(function(_, _, next) seen[#seen + 1] = "mw"; next() end)
        app:get("/users/:id", says("user"))
        app:get("/index.php", says("script"))
        return app, seen
    end

    local function go(app, req)
        local res = fake_res()
        app(req, res)
        res.text = table.concat(res.body)
        return res
    end

    it("routes on req.request_path, not on req.path", function()
        local app = app_of({ path = "request" })
        assert.equal("user id=42", go(app, rewritten("/users/42", "/users/42?x=1")).text)
        assert.equal(404, go(app, rewritten("/nothing", "/nothing")).code)
        local default = app_of()
        assert.equal("script", go(default, rewritten("/users/42", "/users/42")).text)
        assert.equal("script", go(app_of({ path = "path" }), rewritten("/users/42", "/users/42")).text)
    end)

    it("falls back on req.path without REQUEST_URI, and answers 400 (through middleware) for a bad one", function()
        local app, seen = app_of({ path = "request", errors = "json" })
        assert.equal("script", go(app, rewritten(nil, nil)).text)
        assert.equal("script", go(app, rewritten(nil, "")).text)
        local res = go(app, rewritten(nil, "/%zz"))
        assert.same({ 400, "json" }, { res.code, res.error_format })
        assert.same({ "mw", "mw", "mw" }, seen)
        raises_here(function() router.new({ path = "uri" }) end, "path must be")
    end)
end)
