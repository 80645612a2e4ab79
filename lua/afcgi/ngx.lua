-- afcgi.ngx: the `ngx` names that OpenResty's pure-Lua drivers use
-- (lua-resty-redis, lua-resty-mysql, lua-resty-memcached, lua-resty-http...),
-- backed by afcgi, so such drivers run unmodified:
--
--     require "afcgi.ngx"              -- once, before requiring the driver
--     local redis = require "nginx.redis"   -- Debian's lua-nginx-redis
--
-- Drivers read `ngx` as a global, so requiring this module sets the global
-- `ngx` (unless one exists already, as under OpenResty itself). It is the
-- only global afcgi ever sets, and only when asked to.
--
-- What is here: ngx.socket.tcp/connect (afcgi.socket), ngx.null, ngx.log and
-- its levels, ngx.sleep, ngx.now, ngx.time, ngx.update_time, ngx.thread,
-- ngx.timer.at/every, ngx.worker, ngx.config, the ngx.OK... and ngx.HTTP_*
-- constants, ngx.shared (the --shared-dict dictionaries, afcgi.shared). What
-- is not (the nginx request phases, ngx.var, ngx.ctx, ngx.re, ngx.say...)
-- stays absent: a driver that needs it fails loudly on a nil field rather
-- than getting something that only looks alike.
local afcgi = require "afcgi"
local core = require "afcgi.core"

local floor = math.floor

local M = {
    null = core.null,
    socket = { tcp = core.socket.tcp },
    -- log levels, as nginx numbers them
    STDERR = 0, EMERG = 1, ALERT = 2, CRIT = 3, ERR = 4, WARN = 5, NOTICE = 6, INFO = 7,
    DEBUG = 8,
    OK = 0, ERROR = -1, AGAIN = -2, DONE = -4, DECLINED = -5,
    HTTP_OK = 200, HTTP_CREATED = 201, HTTP_NO_CONTENT = 204, HTTP_MOVED_PERMANENTLY = 301,
    HTTP_MOVED_TEMPORARILY = 302, HTTP_NOT_MODIFIED = 304, HTTP_BAD_REQUEST = 400,
    HTTP_UNAUTHORIZED = 401, HTTP_FORBIDDEN = 403, HTTP_NOT_FOUND = 404,
    HTTP_INTERNAL_SERVER_ERROR = 500, HTTP_BAD_GATEWAY = 502, HTTP_SERVICE_UNAVAILABLE = 503,
    HTTP_GATEWAY_TIMEOUT = 504,
    shared = require "afcgi.shared",
    sleep = afcgi.sleep,
    now = afcgi.now,
    update_time = core.update_time,
    thread = { spawn = afcgi.spawn, wait = afcgi.wait, kill = afcgi.kill },
    config = { subsystem = "http", is_console = false, debug = false,
               ngx_lua_version = 10025, prefix = function() return "" end },
}

-- nginx's levels mapped onto afcgi.log's
local LEVELS = { [0] = "error", "error", "error", "error", "error", "warn", "notice", "info",
                 "debug" }

function M.log(level, ...)
    afcgi.log(LEVELS[level] or "error", ...)
end

function M.time()
    return floor(afcgi.now())
end

function M.socket.connect(host, port, opts)
    return afcgi.connect(host, port, opts)
end

-- ngx.timer.at(delay, fn, ...) calls fn(premature, ...): premature is true
-- when the worker is exiting.
local function exiting()
    local _, _, stopping = core.worker()
    return stopping
end

M.timer = {
    at = function(delay, fn, ...)
        local ok, tm = pcall(afcgi.timer, delay, function(...) fn(exiting(), ...) end, ...)
        if not ok then return nil, tm end
        return tm
    end,
    every = function(delay, fn, ...)
        local ok, tm = pcall(afcgi.every, delay, function(...) fn(exiting(), ...) end, ...)
        if not ok then return nil, tm end
        return tm
    end,
}

M.worker = {
    exiting = exiting,
    pid = function() local _, pid = core.worker() return pid end,
    id = function() local n = core.worker() return n > 0 and n - 1 or 0 end,
}

-- lua-resty-lock and others require OpenResty's FFI shdict module first;
-- afcgi.shared already is that API, so the name loads an empty module.
package.preload["resty.core.shdict"] = function() return {} end

if rawget(_G, "ngx") == nil then
    rawset(_G, "ngx", M)
end

return rawget(_G, "ngx")
