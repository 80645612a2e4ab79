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
-- ngx.timer.at/every, ngx.worker, ngx.config, ngx.ctx, ngx.get_phase,
-- ngx.var (read-only, from the FastCGI params), ngx.req.get_method,
-- get_headers, get_uri_args and http_version, the
-- ngx.OK... and ngx.HTTP_* constants, ngx.shared (the --shared-dict
-- dictionaries, afcgi.shared), ngx.re (afcgi.re), the digests,
-- encodings and dates (ngx.md5, ngx.encode_base64, ngx.escape_uri,
-- ngx.http_time... from afcgi.codec), and lua-resty-core's require
-- "ngx.base64"; the output calls ngx.print, ngx.say, ngx.flush, ngx.eof,
-- ngx.exit, ngx.redirect, ngx.status and ngx.header on the current request.
-- What is not (ngx.req.read_body, ngx.location...) stays absent: a driver
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

-- The request the running code serves, or an error as OpenResty's.
local function current(what)
    local r = core.request()
    if not r then
        error(what .. ": API disabled in the context of " .. core.phase(), 3)
    end
    return r
end

local function nonempty(v)
    if v == "" then return nil end
    return v
end

-- nginx variables that are not a FastCGI param of the same name in upper case.
local VARS = {
    uri = function(r) return r.path end,
    args = function(r) return r.query or "" end,
    query_string = function(r) return r.query or "" end,
    is_args = function(r) return (r.query or "") ~= "" and "?" or "" end,
    request_method = function(r) return r.method end,
    scheme = function(r)
        local s = nonempty(r:param("REQUEST_SCHEME"))
        if s then return s end
        return (r:param("HTTPS") or ""):lower() == "on" and "https" or "http"
    end,
    host = function(r)
        local h = nonempty(r:param("HTTP_HOST"))
        if h then return (h:gsub(":%d+$", ""):lower()) end
        return r:param("SERVER_NAME")
    end,
    request_filename = function(r) return r:param("SCRIPT_FILENAME") end,
}

-- The names ngx.var found to be a param, and the param's name: a second
-- read of the same variable goes straight to it (at most VAR_CACHE names).
local VAR_CACHE = 1024
local var_param, nvar_param = {}, 0
local current_param = core.param

-- ngx.var.NAME: the current request's nginx variables, from its FastCGI
-- params (http_user_agent is HTTP_USER_AGENT, remote_addr REMOTE_ADDR...),
-- cookie_NAME and arg_NAME from its cookies and query; read-only.
M.var = setmetatable({}, {
    __index = function(_, name)
        local known = var_param[name]
        if known then
            local v = current_param(known)
            if v ~= false then return v end -- false: no request (the error below)
        end
        local r = current("ngx.var")
        local f = VARS[name]
        if f then return f(r) end
        name = tostring(name)
        local cookie = name:match("^cookie_(.+)$") -- $cookie_NAME, $arg_NAME as nginx's
        if cookie then return r.cookies[cookie] end
        local arg = name:match("^arg_(.+)$")
        if arg then
            local v = (r:args() or {})[arg]
            if type(v) == "table" then v = v[1] end
            return v
        end
        local upper = name:upper()
        if nvar_param < VAR_CACHE and var_param[name] == nil then
            var_param[name], nvar_param = upper, nvar_param + 1
        end
        return r:param(upper)
    end,
    __newindex = function(_, name)
        error("variable \"" .. tostring(name) .. "\" not changeable (afcgi's ngx.var is "
              .. "the request's FastCGI params)", 2)
    end,
})

-- ngx.req: what a FastCGI request can answer.
M.req = {
    get_method = function() return current("ngx.req.get_method").method end,
    get_headers = function() return current("ngx.req.get_headers").headers end,
    get_uri_args = function() return current("ngx.req.get_uri_args"):args() end,
    http_version = function()
        local v = (current("ngx.req.http_version"):param("SERVER_PROTOCOL") or "")
            :match("^HTTP/(%d%.?%d*)$")
        return tonumber(v)
    end,
    -- the downstream socket is the web server's: a FastCGI app reads the
    -- body through req:read
    socket = function() return nil, "not supported (the body is read with req:read)" end,
}

-- require "resty.openssl.ssl", when lua-resty-openssl is not installed (it
-- is not a Debian package; its from_socket needs nginx's own FFI anyway):
-- from_socket(sock):get_peer_certificate() with to_PEM and
-- get_signature_name, what pgmoon's SCRAM-SHA-256-PLUS channel binding
-- reads over TLS. Nothing else of that library is here.
if package.searchpath("resty.openssl.ssl", package.path) == nil then
    package.preload["resty.openssl.ssl"] = function()
        local cert_mt = { __index = {
            to_PEM = function(self) return self.pem end,
            get_signature_name = function(self) return self.signame end,
        } }
        local ssl_mt = { __index = {
            get_peer_certificate = function(self)
                local pem, signame = self.sock:getpeercertificate()
                if not pem then return nil, signame end
                return setmetatable({ pem = pem, signame = signame }, cert_mt)
            end,
        } }
        return {
            from_socket = function(sock)
                if type(sock) ~= "userdata" or not sock.getpeercertificate then
                    return nil, "expect a ngx.socket.tcp instance"
                end
                return setmetatable({ sock = sock }, ssl_mt)
            end,
        }
    end
end

-- lua-resty-core's require "ngx.semaphore": afcgi's semaphores (docs/API.md)
package.preload["ngx.semaphore"] = function()
    return { new = function(n) return core.semaphore(n) end }
end

-- lua-resty-openssl finds an nginx socket's SSL * through this module (its
-- C-backed accessor); afcgi's sockets hand theirs out, so its
-- ssl.from_socket works on them. The client's own TLS is the web server's.
package.preload["resty.openssl.auxiliary.nginx_c"] = function()
    local ffi = require "ffi"
    pcall(ffi.cdef, "typedef struct ssl_st SSL; typedef struct ssl_ctx_st SSL_CTX;")
    local function downstream() return nil, "no TLS here: the client's is the web server's" end
    return {
        get_socket_ssl = function(sock)
            local ssl, err = sock:getsslpointer()
            if not ssl then return nil, err end
            return ffi.cast("SSL *", ssl)
        end,
        get_socket_ssl_ctx = function(sock)
            local _, ctx = sock:getsslpointer()
            if not ctx then return nil, "no ssl connection" end
            return ffi.cast("SSL_CTX *", ctx)
        end,
        get_req_ssl = downstream,
        get_req_ssl_ctx = downstream,
    }
end

-- The output calls of a content handler, on the current request's res.
local function current_res(what)
    local _, res = core.request()
    if not res then
        error(what .. ": API disabled in the context of " .. core.phase(), 3)
    end
    return res
end

-- What ngx.print writes for a value: strings and numbers as they are, nil,
-- booleans and ngx.null by name, arrays (nested) piece by piece.
local function flatten(out, v, depth)
    local t = type(v)
    if t == "string" or t == "number" then
        out[#out + 1] = v
    elseif t == "nil" then
        out[#out + 1] = "nil"
    elseif t == "boolean" then
        out[#out + 1] = v and "true" or "false"
    elseif v == core.null then
        out[#out + 1] = "null"
    elseif t == "table" and depth < 32 then
        for i = 1, #v do flatten(out, v[i], depth + 1) end
    else
        error("bad argument to ngx.print/ngx.say: " .. t .. " (string, number, boolean, nil, "
              .. "ngx.null or an array of them expected)", 3)
    end
end

local function output(what, newline, ...)
    local res = current_res(what)
    local out = {}
    for i = 1, select("#", ...) do flatten(out, (select(i, ...)), 0) end
    if newline then out[#out + 1] = "\n" end
    local ok, err = res:write(table.concat(out))
    if not ok then return nil, err end
    return 1
end

function M.print(...) return output("ngx.print", false, ...) end
function M.say(...) return output("ngx.say", true, ...) end

function M.flush()
    local ok, err = current_res("ngx.flush"):flush()
    if not ok then return nil, err end
    return 1
end

function M.eof()
    return current_res("ngx.eof"):eof()
end

-- ngx.exit(status): ends the handler; ngx.OK (0) as it is, ngx.ERROR as a 500.
function M.exit(status)
    local res = current_res("ngx.exit")
    status = tonumber(status) or 0
    if status == M.ERROR then status = 500 end
    if status >= 100 then return res:exit(status) end
    return res:exit()
end

function M.redirect(uri, status)
    local res = current_res("ngx.redirect")
    res:redirect(uri, status or 302)
    return res:exit()
end

-- ngx.header.NAME: the response header (underscores read as hyphens, as
-- OpenResty does); assigning nil removes it, a table sets several values.
M.header = setmetatable({}, {
    __index = function(_, name)
        return current_res("ngx.header"):get_header((tostring(name):gsub("_", "-")))
    end,
    __newindex = function(_, name, value)
        local res = current_res("ngx.header")
        name = tostring(name):gsub("_", "-")
        if type(value) == "table" then
            res:set_header(name, nil)
            for _, v in ipairs(value) do res:header(name, tostring(v)) end
        else
            res:set_header(name, value ~= nil and tostring(value) or nil)
        end
    end,
})

-- ngx.get_phase(): "content" in a handler (and its light threads), "timer"
-- in a timer, "init" while the app loads.
M.get_phase = core.phase

-- ngx.ctx: the current request's table (req.ctx; shared by its light
-- threads), or a timer run's own; assigning ngx.ctx replaces it.
setmetatable(M, {
    __index = function(_, k)
        if k == "ctx" then return core.ctx() end
        if k == "status" then return current_res("ngx.status"):status() end
    end,
    __newindex = function(t, k, v)
        if k == "ctx" then
            if type(v) ~= "table" then error("ngx.ctx must be a table", 2) end
            return core.set_ctx(v)
        end
        if k == "status" then
            local ok, err = pcall(current_res("ngx.status").status, current_res("ngx.status"),
                                  tonumber(v))
            if not ok then -- OpenResty logs this and goes on
                afcgi.log("error", "attempt to set ngx.status after sending out response "
                          .. "headers (", err, ")")
            end
            return
        end
        rawset(t, k, v)
    end,
})

-- lua-resty-lock and others require OpenResty's FFI shdict module first;
-- afcgi.shared already is that API, so the name loads an empty module.
package.preload["resty.core.shdict"] = function() return {} end

if rawget(_G, "ngx") == nil then
    rawset(_G, "ngx", M)
end

return rawget(_G, "ngx")
