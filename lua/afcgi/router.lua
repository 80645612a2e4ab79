-- afcgi.router: routes a request to a handler by method and path.
--
--     local router = require "afcgi.router"
--     local app = router.new()
--     app:use(function(req, res, next) ... next() ... end)   -- middleware
--     app:get("/users/:id", function(req, res, params) ... end)
--     app:mount("/api", api)                                   -- a sub-router
--     return app                                               -- the handler
--
-- Routes are tried in the order they were added; the first whose path and
-- method match runs. A path that matches only routes of other methods gets
-- 405 with Allow, no match at all 404. Middleware wraps all of it.
local util = require "afcgi.util"

local concat, sort = table.concat, table.sort
local find, gmatch, sub, upper = string.find, string.gmatch, string.sub, string.upper
local error, getmetatable, ipairs, pairs, setmetatable, type =
    error, getmetatable, ipairs, pairs, setmetatable, type

local M = {}

local Router = {}
local router_mt = { __index = Router }

-- Callable: a router is a handler.
function router_mt.__call(self, req, res)
    return self:dispatch(req, res)
end

-- r = router.new([opts]). opts.errors = "json" makes the default 404 and 405
-- answers JSON (res:error's format), else text. opts.path = "request"
-- routes on req.request_path (the path the client asked for, behind a
-- front-controller rewrite such as nginx's try_files $uri /index.php or
-- Caddy's php_fastcgi), else ("path", the default) on req.path.
function M.new(opts)
    util.check_type(opts, "table", 1, "new", true)
    opts = opts or {}
    if opts.errors ~= nil and opts.errors ~= "text" and opts.errors ~= "json" then
        util.arg_error(1, "new", "errors must be \"text\" or \"json\"")
    end
    if opts.path ~= nil and opts.path ~= "path" and opts.path ~= "request" then
        util.arg_error(1, "new", "path must be \"path\" or \"request\"")
    end
    return setmetatable({ routes = {}, middleware = {}, errors = opts.errors,
                          on_request_path = opts.path == "request" }, router_mt)
end

-- Paths -------------------------------------------------------------------

-- "/a/b/" -> { "a", "b", "" }; "/" -> { "" }.
local function split(path)
    local segs, n = {}, 0
    for seg in gmatch(sub(path, 2) .. "/", "([^/]*)/") do
        n = n + 1
        segs[n] = seg
    end
    return segs, n
end

-- A pattern compiled to a list of segments: { lit = "users" }, { param = "id" }
-- (":id", one non-empty segment) or { rest = "path" } ("*path", the rest of
-- the path, possibly empty; last only). A mount prefix drops a trailing "/".
local function compile(pattern, fname, prefix)
    if type(pattern) ~= "string" or sub(pattern, 1, 1) ~= "/" then
        util.arg_error(1, fname, "path pattern expected (a string starting with '/')", 3)
    end
    local segs, n = split(pattern)
    if prefix and segs[n] == "" then
        segs[n], n = nil, n - 1
    end
    local out, seen = {}, {}
    for i = 1, n do
        local s, kind, name = segs[i], nil, nil
        if sub(s, 1, 1) == ":" then kind, name = "param", sub(s, 2)
        elseif sub(s, 1, 1) == "*" then kind, name = "rest", sub(s, 2)
        end
        if kind then
            if not find(name, "^[%a_][%w_]*$") then
                util.arg_error(1, fname, "bad parameter name in " .. pattern, 3)
            end
            if seen[name] then util.arg_error(1, fname, "repeated parameter " .. name, 3) end
            if kind == "rest" and (i < n or prefix) then
                util.arg_error(1, fname, "*" .. name .. " must be the last segment of a route", 3)
            end
            seen[name] = true
            out[i] = { [kind] = name }
        else
            out[i] = { lit = s }
        end
    end
    out.n = n
    return out
end

-- params, consumed = match_path(c, segs, nsegs, prefix): the parameters when
-- the compiled pattern c matches segs (all of them, or its first c.n ones
-- for a prefix), else nil.
local function match_path(c, segs, nsegs, prefix)
    local params = {}
    for i = 1, c.n do
        local p, s = c[i], segs[i]
        if p.rest then
            params[p.rest] = i <= nsegs and concat(segs, "/", i, nsegs) or ""
            return params, nsegs
        end
        if s == nil then return nil end
        if p.param then
            if s == "" then return nil end
            params[p.param] = s
        elseif s ~= p.lit then
            return nil
        end
    end
    if not prefix and nsegs ~= c.n then return nil end
    return params, c.n
end

-- Adding routes -------------------------------------------------------------

local function check_handler(fn, n, fname)
    local t = type(fn)
    if t ~= "function" and not (t == "table" and (getmetatable(fn) or {}).__call) then
        util.arg_error(n, fname, "handler function expected, got " .. t, 3)
    end
end

local function add_route(self, methods, pattern, fn, fname)
    local c = compile(pattern, fname)
    check_handler(fn, 2, fname)
    self.routes[#self.routes + 1] = { c = c, methods = methods, fn = fn, pattern = pattern }
    return self
end

-- r:route(methods, pattern, fn): methods is "GET", a list { "GET", "POST" }
-- or "*" (any). fn(req, res, params) gets the path parameters by name.
-- Returns r, so calls chain.
function Router:route(methods, pattern, fn)
    local set = {}
    if methods == "*" then
        set = "*"
    elseif type(methods) == "string" then
        set[upper(methods)] = true
    elseif type(methods) == "table" and #methods > 0 then
        for _, m in ipairs(methods) do
            if type(m) ~= "string" then util.arg_error(1, "route", "method names expected") end
            set[upper(m)] = true
        end
    else
        util.arg_error(1, "route", "a method, a list of methods or \"*\" expected")
    end
    local c = compile(pattern, "route")
    check_handler(fn, 3, "route")
    self.routes[#self.routes + 1] = { c = c, methods = set, fn = fn, pattern = pattern }
    return self
end

for _, m in ipairs({ "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD" }) do
    local name = m:lower()
    -- r:get(pattern, fn), r:post(...), ...: a route for one method. GET
    -- routes answer HEAD too (the web server drops the body).
    Router[name] = function(self, pattern, fn)
        return add_route(self, { [m] = true }, pattern, fn, name)
    end
end

-- r:any(pattern, fn): a route for every method.
function Router:any(pattern, fn)
    return add_route(self, "*", pattern, fn, "any")
end

-- r:mount(prefix, sub): requests under prefix (which may hold :params) go
-- to the router sub, which routes the rest of the path ("/" for the prefix
-- itself); the prefix's params come first in the params its handlers get.
function Router:mount(prefix, sub_router)
    local c = compile(prefix, "mount", true)
    if getmetatable(sub_router) ~= router_mt then
        util.arg_error(2, "mount", "router expected")
    end
    if sub_router == self then util.arg_error(2, "mount", "a router cannot mount itself") end
    self.routes[#self.routes + 1] = { c = c, mount = sub_router, pattern = prefix }
    return self
end

-- r:use(fn): middleware, run in the order added around everything the
-- router does (routes, mounts, 404, 405): fn(req, res, next). Code before
-- next() runs before the route, code after it after; not calling next()
-- answers the request there (auth, CORS preflight).
function Router:use(fn)
    check_handler(fn, 1, "use")
    self.middleware[#self.middleware + 1] = fn
    return self
end

-- r:not_found(fn): fn(req, res) answers requests no route matches (default:
-- res:error(404)).
function Router:not_found(fn)
    check_handler(fn, 1, "not_found")
    self.on_not_found = fn
    return self
end

-- r:method_not_allowed(fn): fn(req, res, allowed) answers a path whose
-- routes are all for other methods; allowed is the sorted list, already in
-- the Allow header (default: res:error(405)).
function Router:method_not_allowed(fn)
    check_handler(fn, 1, "method_not_allowed")
    self.on_method_not_allowed = fn
    return self
end

-- Dispatch --------------------------------------------------------------------

local function merge(base, params)
    if not base then return params end
    local out = {}
    for k, v in pairs(base) do out[k] = v end
    for k, v in pairs(params) do out[k] = v end
    return out
end

local function allows(methods, method)
    return methods == "*" or methods[method] or (method == "HEAD" and methods.GET)
end

local function answer_405(self, req, res, allowed)
    local list = {}
    for m in pairs(allowed) do list[#list + 1] = m end
    if allowed.GET and not allowed.HEAD then list[#list + 1] = "HEAD" end
    sort(list)
    res:header("Allow", concat(list, ", "))
    if self.on_method_not_allowed then
        return self.on_method_not_allowed(req, res, list)
    end
    return res:error(405, nil, self.errors)
end

local dispatch

-- Finds and runs the route for segs (after middleware).
local function route(self, req, res, segs, nsegs, base)
    if not segs then return res:error(400, nil, self.errors) end -- see path_of
    local method, allowed = req.method, nil
    for _, rt in ipairs(self.routes) do
        local params, used = match_path(rt.c, segs, nsegs, rt.mount)
        if params and rt.mount then
            local rest, n = {}, 0
            for i = used + 1, nsegs do
                n = n + 1
                rest[n] = segs[i]
            end
            if n == 0 then rest[1], n = "", 1 end
            return dispatch(rt.mount, req, res, rest, n, merge(base, params))
        elseif params then
            if allows(rt.methods, method) then
                return rt.fn(req, res, merge(base, params))
            end
            allowed = allowed or {}
            for m in pairs(rt.methods) do allowed[m] = true end
        end
    end
    if allowed then return answer_405(self, req, res, allowed) end
    if self.on_not_found then return self.on_not_found(req, res) end
    return res:error(404, nil, self.errors)
end

local function run(self, i, req, res, segs, nsegs, base)
    local mw = self.middleware[i]
    if not mw then return route(self, req, res, segs, nsegs, base) end
    local called = false
    return mw(req, res, function()
        if called then error("next() called twice by one middleware", 2) end
        called = true
        return run(self, i + 1, req, res, segs, nsegs, base)
    end)
end

-- Runs middleware and route for the path segs (relative to a mount).
function dispatch(self, req, res, segs, nsegs, base)
    return run(self, 1, req, res, segs, nsegs, base)
end

-- The path a router routes on. With opts.path = "request": req.request_path;
-- nil, true when REQUEST_URI is one nginx would reject (answered 400);
-- req.path when the web server sent no REQUEST_URI.
local function path_of(self, req)
    if self.on_request_path then
        local p = req.request_path
        if p then return p end
        local uri = type(req.param) == "function" and req:param("REQUEST_URI")
        if uri and uri ~= "" then return nil, true end
    end
    return req.path
end

-- r:dispatch(req, res): routes req on req.path (or req.request_path, see
-- router.new). What r(req, res) does.
function Router:dispatch(req, res)
    local path, bad = path_of(self, req)
    if bad then return dispatch(self, req, res, nil, 0) end -- 400, through the middleware
    if type(path) ~= "string" or sub(path, 1, 1) ~= "/" then path = "/" .. (path or "") end
    return dispatch(self, req, res, split(path))
end

-- fn = r:handler(): a plain function(req, res) for the router.
function Router:handler()
    return function(req, res) return self:dispatch(req, res) end
end

-- router.is_router(v): true when v is a router.
function M.is_router(v)
    return getmetatable(v) == router_mt
end

return M
