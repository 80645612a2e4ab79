-- examples/index.lua: every example under one afcgi, routed on the path:
--   /        a small HTML page linking the others
--   /hello   examples/hello.lua
--   /sleep   examples/sleep.lua   (?ms=N)
--   /echo    examples/echo.lua    (any method; POST a body to see body_len)
--   /chat/   examples/chat.lua    (long-poll chat room, mounted with afcgi.router)
-- anything else answers 404.
--
--     ./afcgi --listen 127.0.0.1:9000 examples/index.lua
--
-- The other examples are loaded from this file's own directory, once, when
-- afcgi loads the app: a missing or broken one stops afcgi at start-up with
-- file:line instead of failing requests later. (The app's directory is also
-- on package.path, so `require "hello"` would find the same file.)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function load_example(name)
    local path = dir .. name .. ".lua"
    local chunk, err = loadfile(path)
    if not chunk then
        error("cannot load " .. err, 2)          -- err names file:line
    end
    local handler = chunk()
    local mt = getmetatable(handler)
    if type(handler) ~= "function" and not (type(mt) == "table" and mt.__call) then
        error(path .. " did not return a handler", 2)
    end
    return handler
end

local routes = {
    ["/hello"] = load_example("hello"),
    ["/sleep"] = load_example("sleep"),
    ["/echo"] = load_example("echo"),
}

-- the chat is a router of its own: mounted, it sees paths below /chat
local mounted = require("afcgi.router").new()
mounted:mount("/chat", load_example("chat"))

local INDEX = [[
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>afcgi examples</title></head>
<body>
<h1>afcgi examples</h1>
<ul>
  <li><a href="/hello">/hello</a>: Hello, world!</li>
  <li><a href="/sleep?ms=500">/sleep?ms=500</a>: waits half a second without
      blocking other requests (open several at once)</li>
  <li><a href="/echo?a=1&amp;b=two">/echo?a=1&amp;b=two</a>: the request as JSON</li>
  <li><a href="/chat/">/chat/</a>: a long-poll chat room (open it in two windows)</li>
</ul>
<form method="post" action="/echo?from=form">
  <input name="text" value="some text"> <button>POST to /echo</button>
</form>
<p>afcgi %s</p>
</body>
</html>
]]

local afcgi = require "afcgi"
local index_page = INDEX:format(afcgi.version)

return function(req, res)
    local handler = routes[req.path]
    if handler then
        return handler(req, res)
    end
    if req.path == "/chat" then
        return res:redirect("/chat/")          -- the page's links are relative
    end
    if req.path:sub(1, 6) == "/chat/" then
        return mounted(req, res)
    end
    if req.path == "/" then
        res:header("Content-Type", "text/html; charset=utf-8")
        res:write(index_page)
        return
    end
    res:status(404)
    res:header("Content-Type", "text/plain")
    res:write("not found: ", req.path, "\n")
end
