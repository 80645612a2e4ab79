-- Runs one Lua chunk in two places: inside Debian's nginx with its lua
-- module (lua-nginx-module, content_by_lua) and inside afcgi
-- (spec/fixtures/ngx_eval.lua, with afcgi.ngx), so a spec can hold afcgi's
-- OpenResty names to what OpenResty itself returns for the same inputs.
--
--     local pair = ngx_eval.start()       -- in before_each: nginx + afcgi, cleaned up
--     local theirs, ours = pair:both(ngx_eval.calls({ 'ngx.md5("x")', ... }))
--
-- Each expression runs under pcall and comes back as one line, its values
-- serialized the same way on both sides (tables with sorted keys, strings
-- %q-quoted); an error is "error: <message>" without its "file:line:".
local helpers = require "helpers"
local fc = require "fcgi_client"

local M = {}

M.CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 64; }
http {
    access_log off;
${temps}    client_body_buffer_size 16m;
    client_max_body_size 16m;
    server {
        listen 127.0.0.1:${port};
        location / {
            content_by_lua_block {
                ngx.req.read_body()
                local chunk, err = loadstring(ngx.req.get_body_data() or "", "=eval")
                if not chunk then return ngx.print("compile: ", err) end
                local ok, v = pcall(chunk)
                ngx.print(ok and tostring(v) or ("error: " .. tostring(v)))
            }
        }
    }
}
]]

-- The serializer both sides run before the calls.
M.PRELUDE = [=[
local function show(v)
    local t = type(v)
    if t == "string" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
    if t ~= "table" then return tostring(v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
        if type(a) == type(b) then return a < b end
        return type(a) == "number"
    end)
    local out = {}
    for _, k in ipairs(keys) do out[#out + 1] = "[" .. show(k) .. "]=" .. show(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
end
local function line(ok, ...)
    if not ok then
        return "error: " .. tostring((...)):gsub("^[^\n]-:%d+: ", "")
    end
    local out = {}
    for i = 1, select("#", ...) do out[i] = show((select(i, ...))) end
    return table.concat(out, ", ")
end
local R = {}
]=]

-- A chunk that evaluates each expression (Lua source) and returns the
-- result lines joined by newlines; extra (Lua source) runs first, to define
-- helpers the expressions use.
function M.calls(exprs, extra)
    local parts = { M.PRELUDE, extra }
    for _, e in ipairs(exprs) do
        parts[#parts + 1] = ("R[#R + 1] = line(pcall(function() return %s end))"):format(e)
    end
    parts[#parts + 1] = 'return table.concat(R, "\\n")'
    return table.concat(parts, "\n")
end

-- s as a Lua string literal, for building expressions from data.
function M.lit(s) return (("%q"):format(s)) end

local Pair = {}
Pair.__index = Pair

function Pair:nginx(code)
    local r = helpers.http_request(self.ngx.port, { method = "POST", path = "/", body = code }, 30)
    assert(r.status == 200, "nginx answered " .. tostring(r.status) .. ": " .. r.body)
    return r.body
end

function Pair:afcgi(code)
    self.id = self.id + 1
    local r = self.conn:request(self.id, fc.cgi_params("POST", "/", nil, #code), code,
                                { timeout = 30 })
    assert(r.status == 200, "afcgi answered " .. tostring(r.status) .. ": " .. r.body)
    return r.body
end

function Pair:both(code) return self:nginx(code), self:afcgi(code) end

-- The two outputs of code compared line by line; fails naming the first
-- line that differs (with the expression) and how many did. A line where
-- nginx's result matches the pattern nginx_bug is not compared (an
-- OpenResty bug the spec names); returns the lines compared and skipped.
function Pair:same(exprs, nginx_bug, extra)
    local theirs, ours = self:both(M.calls(exprs, extra))
    local a, b = {}, {}
    for l in (theirs .. "\n"):gmatch("([^\n]*)\n") do a[#a + 1] = l end
    for l in (ours .. "\n"):gmatch("([^\n]*)\n") do b[#b + 1] = l end
    local bad, first, skipped = 0, nil, 0
    for i = 1, math.max(#a, #b) do
        if nginx_bug and a[i] and a[i]:find(nginx_bug) then
            skipped = skipped + 1
        elseif a[i] ~= b[i] then
            bad = bad + 1
            first = first or ("%s\n  nginx: %s\n  afcgi: %s"):format(exprs[i] or "?",
                                                                    tostring(a[i]), tostring(b[i]))
        end
    end
    if bad > 0 and os.getenv("NGX_EVAL_DIFFS") then     -- every difference, to stderr
        for i = 1, math.max(#a, #b) do
            if a[i] ~= b[i] then
                io.stderr:write(exprs[i] or "?", "\n  nginx: ", tostring(a[i]), "\n  afcgi: ",
                                tostring(b[i]), "\n")
            end
        end
    end
    if bad > 0 then
        error(("%d of %d results differ from nginx's; the first:\n%s"):format(bad, #exprs, first), 2)
    end
    return #a - skipped, skipped
end

-- nginx with the lua module and afcgi with the eval fixture (extra afcgi
-- arguments in args), both stopped at cleanup.
function M.start(args)
    local srv = helpers.start_server("ngx_eval", { args = args })
    local ngx = helpers.start_nginx(M.CONF)
    return setmetatable({ srv = srv, ngx = ngx, conn = helpers.connect(srv), id = 0 }, Pair)
end

return M
