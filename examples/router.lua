-- examples/router.lua: afcgi.router with path params, a wildcard, a
-- mounted sub-router, middleware (logging, auth) and 404/405 pages; large
-- files are handed to nginx with X-Accel-Redirect.
--
--     ./afcgi --listen 127.0.0.1:9000 examples/router.lua
--
--   GET  /                       links
--   GET  /hello/:name            a path parameter
--   GET  /old                    301 to /hello/world
--   GET  /files/*path            X-Accel-Redirect to nginx's internal
--                                /protected/ location (see below); 400 for ".."
--   GET  /admin/                 needs "Authorization: Bearer letmein" (401)
--   POST /admin/reload           the same; GET on it is a 405 with Allow
--   anything else                a 404 page
--
-- For /files, nginx needs an internal location, e.g.
--     location /protected/ { internal; alias /srv/files/; }
local afcgi = require "afcgi"
local router = require "afcgi.router"

local app = router.new()

-- Logging around everything: the "after" half runs once the route answered.
app:use(function(req, res, next)
    local t0 = afcgi.now()
    next()
    afcgi.log("info", req.method, " ", req.path, " -> ", res:status(),
              (" in %.1f ms"):format((afcgi.now() - t0) * 1000))
end)

app:get("/", function(_, res)
    res:header("Content-Type", "text/html; charset=utf-8")
    res:write([[<!DOCTYPE html><meta charset="utf-8"><title>router</title><ul>
<li><a href="/hello/world">/hello/world</a> <li><a href="/old">/old</a>
<li><a href="/files/report.pdf">/files/report.pdf</a> (behind nginx)
<li><a href="/admin/">/admin/</a> (401 without the token) <li><a href="/nope">/nope</a></ul>]])
end)

app:get("/hello/:name", function(_, res, params)
    res:header("Content-Type", "text/plain; charset=utf-8")
    res:write("Hello, ", params.name, "!\n")
end)

app:get("/old", function(_, res)
    res:redirect("/hello/world", 301)
end)

app:get("/files/*path", function(_, res, params)
    local path = params.path
    if path == "" or path:find("%.%.") or path:find("^/") then
        return res:error(400, "bad file name")
    end
    -- Set the Content-Type: nginx keeps it for the file it serves.
    local ext = path:match("%.(%w+)$")
    res:header("Content-Type", ({ pdf = "application/pdf", txt = "text/plain",
                                  png = "image/png" })[ext] or "application/octet-stream")
    res:accel_redirect("/protected/" .. path)
end)

-- /admin: a sub-router with its own middleware.
local admin = router.new()
admin:use(function(req, res, next)
    if req:header("Authorization") ~= "Bearer letmein" then
        res:header("WWW-Authenticate", 'Bearer realm="admin"')
        return res:error(401)
    end
    req.ctx.admin = true
    next()
end)
admin:get("/", function(_, res)
    res:header("Content-Type", "text/plain")
    res:write("admin home\n")
end)
admin:post("/reload", function(_, res)
    res:header("Content-Type", "text/plain")
    res:write("reloaded\n")
end)
app:mount("/admin", admin)

app:not_found(function(req, res)
    res:status(404)
    res:header("Content-Type", "text/html; charset=utf-8")
    res:write("<!DOCTYPE html><title>Not found</title><p>Nothing at ",
              (req.path:gsub("[&<>\"]", "")), " &mdash; <a href=\"/\">home</a>.")
end)

return app
