-- A counter per path, kept in Redis: GET /anything answers how many times
-- /anything was asked for. Each request is one Redis round trip through
-- OpenResty's pure-Lua driver (Debian's lua-nginx-redis), on afcgi's
-- non-blocking sockets: while it waits for Redis the worker serves others.
--
--     REDIS_HOST=127.0.0.1 REDIS_PORT=6379 afcgi examples/redis_counter.lua
--
-- REDIS_POOL (default 100) is how many idle connections the worker keeps:
-- set it to the number of requests you expect at once, or the ones over it
-- close and reconnect.
require "afcgi.ngx"                         -- the ngx names the driver uses
local redis = require "nginx.redis"

local HOST = os.getenv("REDIS_HOST") or "127.0.0.1"
local PORT = tonumber(os.getenv("REDIS_PORT")) or 6379
local POOL = tonumber(os.getenv("REDIS_POOL")) or 100

return function(req, res)
    local red = redis:new()
    red:set_timeout(1000)                   -- ms, for connect, send and read
    local ok, err = red:connect(HOST, PORT)
    if not ok then
        return res:error(503, "redis: " .. err)
    end
    local n
    n, err = red:incr("counter:" .. req.path)
    if not n then
        red:close()
        return res:error(500, "redis: " .. err)
    end
    red:set_keepalive(10000, POOL)          -- back to the pool: idle 10 s, POOL per worker
    res:header("Content-Type", "text/plain")
    res:write(req.path, " ", n, "\n")
end
