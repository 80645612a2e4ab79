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
-- ngx.timer.at/every, ngx.worker, ngx.config, ngx.ctx, ngx.get_phase, the
-- ngx.OK... and ngx.HTTP_* constants, ngx.re (afcgi.re), the digests,
-- encodings and dates (ngx.md5, ngx.encode_base64, ngx.escape_uri,
-- ngx.http_time... from afcgi.codec), and lua-resty-core's require
-- "ngx.base64". What is not (ngx.var, ngx.say...) stays absent: a driver
-- that needs it fails loudly on a nil field rather than getting something
-- that only looks alike.
local afcgi = require "afcgi"
local core = require "afcgi.core"

local floor = math.floor

local M = {
    null = core.null,
    socket = { tcp = core.socket.tcp, udp = core.socket.udp },
    -- log levels, as nginx numbers them
    STDERR = 0, EMERG = 1, ALERT = 2, CRIT = 3, ERR = 4, WARN = 5, NOTICE = 6, INFO = 7,
    DEBUG = 8,
    OK = 0, ERROR = -1, AGAIN = -2, DONE = -4, DECLINED = -5,
    HTTP_OK = 200, HTTP_CREATED = 201, HTTP_NO_CONTENT = 204, HTTP_MOVED_PERMANENTLY = 301,
    HTTP_MOVED_TEMPORARILY = 302, HTTP_NOT_MODIFIED = 304, HTTP_BAD_REQUEST = 400,
    HTTP_UNAUTHORIZED = 401, HTTP_FORBIDDEN = 403, HTTP_NOT_FOUND = 404,
    HTTP_INTERNAL_SERVER_ERROR = 500, HTTP_BAD_GATEWAY = 502, HTTP_SERVICE_UNAVAILABLE = 503,
    HTTP_GATEWAY_TIMEOUT = 504,
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
    count = function() local _, _, _, count = core.worker() return count end,
}

-- ngx.re and the codec names (docs/API.md, "OpenResty names").
M.re = require "afcgi.re"
do
    local codec = require "afcgi.codec"
    for _, name in ipairs { "md5", "md5_bin", "sha1_bin", "hmac_sha1", "crc32_short",
                            "crc32_long", "encode_base64", "decode_base64", "escape_uri",
                            "unescape_uri", "encode_args", "decode_args", "quote_sql_str",
                            "http_time", "cookie_time", "parse_http_time", "utctime",
                            "localtime", "today" } do
        M[name] = codec[name]
    end
    -- lua-resty-core's module; preloaded so its FFI version (Debian's
    -- lua-resty-core, on the default path) is not the one found.
    package.preload["ngx.base64"] = function()
        return { encode_base64url = codec.encode_base64url,
                 decode_base64url = codec.decode_base64url }
    end
end

-- ngx.get_phase(): "content" in a handler (and its light threads), "timer"
-- in a timer, "init" while the app loads.
M.get_phase = core.phase

-- ngx.ctx: the current request's table (req.ctx; shared by its light
-- threads), or a timer run's own; assigning ngx.ctx replaces it.
setmetatable(M, {
    __index = function(_, k)
        if k == "ctx" then return core.ctx() end
    end,
    __newindex = function(t, k, v)
        if k == "ctx" then
            if type(v) ~= "table" then error("ngx.ctx must be a table", 2) end
            return core.set_ctx(v)
        end
        rawset(t, k, v)
    end,
})

if rawget(_G, "ngx") == nil then
    rawset(_G, "ngx", M)
end

return rawget(_G, "ngx")
