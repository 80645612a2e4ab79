-- bench/apps/openresty.lua: the routes bench/openresty runs both inside
-- nginx's lua module and on afcgi (through afcgi.ngx), the same code on
-- both: only OpenResty's API.
--   /hello   a line
--   /https   one GET through a pooled, verified TLS connection to the
--            upstream at port ngx.var.tls_port (the handshake only on a
--            new connection)
--   /re      100 ngx.re.match calls with "jo"
--   /redis   one INCR through OpenResty's Redis driver (Debian's
--            lua-nginx-redis, unmodified) on a pooled connection to the
--            Redis at port ngx.var.redis_port
local redis = require "nginx.redis"

local M = {}

M["/hello"] = function()
    ngx.say("hello")
end

local REQUEST = "GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n"

M["/https"] = function()
    local sock = ngx.socket.tcp()
    sock:settimeout(2000)
    local ok, err = sock:connect("127.0.0.1", tonumber(ngx.var.tls_port), { pool = "bench-tls" })
    if not ok then ngx.status = 502 return ngx.say("connect: ", err) end
    if sock:getreusedtimes() == 0 then
        ok, err = sock:sslhandshake(false, "localhost", true)
        if not ok then ngx.status = 502 return ngx.say("handshake: ", err) end
    end
    sock:send(REQUEST)
    local status = sock:receive()
    local len
    while true do
        local line = sock:receive()
        if not line then ngx.status = 502 return ngx.say("headers") end
        if line == "" then break end
        len = len or tonumber(line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
    end
    local body = sock:receive(len or 0)
    sock:setkeepalive(60000, 64)
    ngx.say(status, " ", body and #body)
end

M["/redis"] = function()
    local red = redis:new()
    red:set_timeout(1000)
    local ok, err = red:connect("127.0.0.1", tonumber(ngx.var.redis_port))
    if not ok then ngx.status = 502 return ngx.say("connect: ", err) end
    local n
    n, err = red:incr("bench:counter")
    if not n then ngx.status = 502 return ngx.say("incr: ", err) end
    red:set_keepalive(10000, 256)
    ngx.say(n > 0 and "counted" or "?")
end

local SUBJECT = "order 2026-12-07 shipped to 4711 at 12:34:56"

M["/re"] = function()
    local n = 0
    for _ = 1, 100 do
        local m = ngx.re.match(SUBJECT, [[(\d{4})-(\d\d)-(\d\d)]], "jo")
        if m then n = n + #m[1] end
    end
    ngx.say(n)
end

return M
