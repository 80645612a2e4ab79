-- afcgi.request: the Lua half of req and res, loaded once per code
-- generation before the app. C provides the primitives in the method tables
-- of afcgi.core; what is not on a hot path is written here.
--
-- Computed req fields (req.headers, req.host, ...) are functions in
-- core.req_fields: the C __index calls the one named by the key the first
-- time it is read and caches a non-nil result in req with rawset.
local core = require "afcgi.core"
require "afcgi.coroutine" -- resume and wrap that can wait in afcgi calls, before the app
local cookie = require "afcgi.cookie"
local multipart = require "afcgi.multipart"
local query = require "afcgi.query"
local util = require "afcgi.util"

local char, find, gmatch, gsub, lower, match, sub, upper = string.char, string.find,
    string.gmatch, string.gsub, string.lower, string.match, string.sub, string.upper
local concat = table.concat
local error, pairs, pcall, rawget, rawset, setmetatable, tonumber, tostring, type =
    error, pairs, pcall, rawget, rawset, setmetatable, tonumber, tostring, type

local req = core.req_methods
local res = core.res_methods
local fields = core.req_fields   -- name -> function(req): filled below

-- Our own cjson instance, made on first use (lua-cjson is needed only by
-- the JSON functions): settings an app makes on require "cjson" do not
-- change ours. Strict JSON in (no NaN, Infinity or hex), none out.
local json

local function get_json()
    if not json then
        local ok, cjson = pcall(require, "cjson")
        if not ok then
            error("JSON needs lua-cjson (Debian: apt-get install lua-cjson): " .. cjson, 3)
        end
        json = cjson.new()
        json.decode_invalid_numbers(false)
        json.encode_invalid_numbers(false)
    end
    return json
end

-- Per-request cache of what the methods computed, under a key no handler
-- can collide with.
local CACHE = {}

local function cache_of(self)
    local c = rawget(self, CACHE)
    if not c then
        c = {}
        rawset(self, CACHE, c)
    end
    return c
end

local function nonempty(s)
    if s == "" then return nil end
    return s
end

-- req ----------------------------------------------------------------------

local read_body = req.read_body

-- body, err = req:read_body(): the whole body, once; later calls and
-- req.body give the same string.
function req:read_body()
    local body = rawget(self, "body")
    if body then
        return body
    end
    local err
    body, err = read_body(self)
    if body then
        self.body = body
    end
    return body, err
end

-- value = req:header(name): the request header name (any case, "-" or "_")
-- from its HTTP_* param; Content-Type and Content-Length from CONTENT_TYPE
-- and CONTENT_LENGTH. nil when absent.
function req:header(name)
    if type(name) ~= "string" then
        util.arg_error(1, "header", "string expected, got " .. type(name))
    end
    local key = gsub(upper(name), "-", "_")
    if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH" then
        return nonempty(self:param(key))
    end
    return self:param("HTTP_" .. key)
end

-- Lower-case, "-" separated: the canonical key of req.headers.
local function header_key(name)
    return (gsub(lower(name), "_", "-"))
end

local headers_mt = {
    __index = function(t, k)
        if type(k) ~= "string" then return nil end
        local key = header_key(k)
        if key == k then return nil end
        return rawget(t, key)
    end,
}

-- req.headers: every request header, by lower-case name ("user-agent");
-- any other spelling finds the same value (headers["User-Agent"],
-- headers.user_agent). pairs() gives the lower-case names.
function fields.headers(self)
    local h = {}
    for k, v in pairs(self.params) do
        if sub(k, 1, 5) == "HTTP_" then
            h[header_key(sub(k, 6))] = v
        end
    end
    h["content-type"] = nonempty(self:param("CONTENT_TYPE")) or h["content-type"]
    h["content-length"] = nonempty(self:param("CONTENT_LENGTH")) or h["content-length"]
    return setmetatable(h, headers_mt)
end

-- req.path itself is the C core's (req_path in src/server/req.c):
-- DOCUMENT_URI when not empty, else REQUEST_URI up to "?", else SCRIPT_NAME
-- .. PATH_INFO.

-- req.script_name, req.path_info: SCRIPT_NAME and PATH_INFO as the web
-- server sent them, "" when absent (so script_name .. path_info is CGI's
-- path).
function fields.script_name(self)
    return self:param("SCRIPT_NAME") or ""
end

function fields.path_info(self)
    return self:param("PATH_INFO") or ""
end

local function hex_byte(h)
    return char(tonumber(h, 16))
end

-- The path of a request target, made the way nginx makes $uri from it (its
-- defaults: merge_slashes on): the part before "?" or "#", %XX decoded
-- once (a decoded "/" or "." counts as one, a decoded "%", "?" or "#" is
-- a plain byte), slashes merged, "." segments dropped, ".." taking the
-- segment before it away; a final ".", ".." or "/" leaves a trailing "/".
-- nil where nginx answers 400: a control byte or space, a "%" without two
-- hex digits, %00, a ".." above the root, a target that is not a path.
local function target_path(uri)
    local raw = match(uri, "^[^?#]*")
    if find(raw, "[%z\1-\32\127]") then return nil end
    local after_authority = match(raw, "^%a[%w+.-]*://[^/]*(.*)$") -- absolute form
    if after_authority then
        raw = after_authority == "" and "/" or after_authority
    end
    if sub(raw, 1, 1) ~= "/" or find(gsub(raw, "%%%x%x", ""), "%", 1, true) then
        return nil
    end
    local decoded = gsub(raw, "%%(%x%x)", hex_byte)
    if find(decoded, "%z") then return nil end
    local segs, n, dir = {}, 0, false
    for seg in gmatch(sub(decoded, 2) .. "/", "([^/]*)/") do
        dir = seg == "" or seg == "." or seg == ".."
        if seg == ".." then
            if n == 0 then return nil end
            n = n - 1
        elseif not dir then
            n = n + 1
            segs[n] = seg
        end
    end
    if n == 0 then return "/" end
    return "/" .. concat(segs, "/", 1, n) .. (dir and "/" or "")
end

-- req.request_path: the path the client asked for, from REQUEST_URI (see
-- target_path), whatever a front-controller rewrite made of DOCUMENT_URI
-- and SCRIPT_NAME; nil without REQUEST_URI or for one nginx would reject.
function fields.request_path(self)
    local uri = nonempty(self:param("REQUEST_URI"))
    return uri and target_path(uri)
end

-- req.scheme: "https" when the web server says so (HTTPS=on, or
-- REQUEST_SCHEME), else "http".
function fields.scheme(self)
    local https = self:param("HTTPS")
    if https and https ~= "" and lower(https) ~= "off" then
        return "https"
    end
    return lower(nonempty(self:param("REQUEST_SCHEME")) or "http")
end

-- req.host: the host name the client asked for, lower-case, without the
-- port (from the Host header, else SERVER_NAME); nil when neither is given.
function fields.host(self)
    local h = nonempty(self:param("HTTP_HOST")) or nonempty(self:param("SERVER_NAME"))
    if not h then return nil end
    h = match(h, "^(%[[^%]]*%])") or match(h, "^[^:]*")
    return nonempty(lower(h))
end

function fields.remote_addr(self)
    return nonempty(self:param("REMOTE_ADDR"))
end

function fields.remote_port(self)
    return tonumber(match(self:param("REMOTE_PORT") or "", "^%d+$"))
end

function fields.content_type(self)
    return nonempty(self:param("CONTENT_TYPE"))
end

-- req.content_length: a number, or nil when absent or not a number.
function fields.content_length(self)
    return tonumber(match(self:param("CONTENT_LENGTH") or "", "^%d+$"))
end

-- req.cookies: name -> value from the Cookie header.
function fields.cookies(self)
    return cookie.parse(self:param("HTTP_COOKIE"))
end

-- req.ctx: a table for the handler, its middleware and its light threads,
-- one per request; the same table as ngx.ctx in that request.
function fields.ctx(self)
    return core.ctx(self[1])
end

-- value = req:cookie(name): one cookie, or nil.
function req:cookie(name)
    if type(name) ~= "string" then
        util.arg_error(1, "cookie", "string expected, got " .. type(name))
    end
    return self.cookies[name]
end

-- args, err = req:args(): the query string decoded (see afcgi.query), the
-- same table on every call; err == "truncated" past query.MAX_ARGS pairs.
function req:args()
    local c = cache_of(self)
    if not c.args then
        c.args, c.args_err = query.decode(self.query)
    end
    return c.args, c.args_err
end

local function body_of_type(self, accept)
    if not accept(util.media_type(self.content_type)) then
        return nil, "wrong content type"
    end
    return self:read_body()
end

local function is_form(mt)
    return mt == "application/x-www-form-urlencoded"
end

local function is_json(mt)
    return mt ~= nil and (mt == "application/json" or find(mt, "^application/[^/]*%+json$") ~= nil)
end

-- form, err = req:form(): the application/x-www-form-urlencoded body
-- decoded (as req:args). nil, "wrong content type" for another
-- Content-Type, nil, "too large" past --max-body; a form past
-- query.MAX_ARGS fields comes with err == "truncated".
function req:form()
    local c = cache_of(self)
    if c.form then return c.form, c.form_err end
    local body, err = body_of_type(self, is_form)
    if not body then return nil, err end
    c.form, c.form_err = query.decode(body)
    return c.form, c.form_err
end

-- value, err = req:json(): the JSON body decoded (null is cjson.null).
-- nil, "wrong content type" unless Content-Type is application/json (or
-- application/*+json); nil, "too large"; nil, "invalid json: <why>".
function req:json()
    local c = cache_of(self)
    if c.json_done then return c.json, c.json_err end
    local body, err = body_of_type(self, is_json)
    if body then
        local ok, value = pcall(get_json().decode, body)
        if ok then
            c.json = value
        else
            err = "invalid json: " .. tostring(value)
        end
    end
    c.json_done, c.json_err = true, err
    return c.json, err
end

-- A reader over the body for multipart: req:read, or the body read_body
-- already took.
local function body_reader(self)
    local body = rawget(self, "body")
    if body then
        return function()
            local b = body
            body = nil
            return b
        end
    end
    return function() return self:read(65536) end
end

-- ok, err = req:multipart(handlers[, opts]): streams a multipart/form-data
-- body through handlers (see afcgi.multipart.parse) as it arrives.
-- form, err = req:multipart(): collects it instead: fields as strings, files
-- in temporary files (see afcgi.multipart.collect).
function req:multipart(handlers, opts)
    if handlers ~= nil and type(handlers) ~= "table" then
        util.arg_error(1, "multipart", "table expected, got " .. type(handlers))
    end
    if opts ~= nil and type(opts) ~= "table" then
        util.arg_error(2, "multipart", "table expected, got " .. type(opts))
    end
    if handlers == nil then
        return multipart.collect(body_reader(self), self.content_type, opts)
    end
    return multipart.parse(body_reader(self), self.content_type, handlers, opts)
end

-- res ----------------------------------------------------------------------

local function check_status(status, n, fname, lo, hi)
    if type(status) ~= "number" or status ~= status - status % 1 or status < lo or status > hi then
        util.arg_error(n, fname, ("status must be an integer %d..%d"):format(lo, hi), 3)
    end
end

-- The helpers below replace (res:set_header) the headers they own, so an
-- earlier Content-Type or Location does not go out twice.

-- ok = res:json(value[, status]): value as JSON, Content-Type
-- application/json. Raises when value cannot be encoded (functions,
-- sparse arrays, NaN) or after the body has started.
function res:json(value, status)
    if status ~= nil then check_status(status, 2, "json", 100, 999) end
    local ok, body = pcall(get_json().encode, value)
    if not ok then
        error("res:json: cannot encode: " .. tostring(body), 2)
    end
    if status then self:status(status) end
    self:set_header("Content-Type", "application/json")
    return self:write(body)
end

-- res:redirect(url[, status]): answers status (default 302; 301, 303, 307
-- and 308 too) with Location: url and no body. Raises on CR, LF or NUL in
-- url.
function res:redirect(url, status)
    if type(url) ~= "string" or url == "" then
        util.arg_error(1, "redirect", "non-empty string expected")
    end
    if util.has_crlf(url) then
        util.arg_error(1, "redirect", "CR, LF or NUL in url")
    end
    status = status or 302
    if status ~= 301 and status ~= 302 and status ~= 303 and status ~= 307 and status ~= 308 then
        util.arg_error(2, "redirect", "status must be 301, 302, 303, 307 or 308")
    end
    self:status(status)
    self:set_header("Location", url)
end

-- res:cookie(name, value[, opts]): adds a Set-Cookie header (see
-- afcgi.cookie.build for opts); call again for another cookie. Raises on an
-- invalid name, value or option.
function res:cookie(name, value, opts)
    local s, err = cookie.format(name, value, opts)
    if not s then error("res:cookie: " .. err, 2) end
    self:header("Set-Cookie", s)
end

local function check_front_path(p, fname)
    if type(p) ~= "string" or sub(p, 1, 1) ~= "/" then
        util.arg_error(1, fname, "absolute path expected (starting with '/')", 3)
    end
    if util.has_crlf(p) then
        util.arg_error(1, fname, "CR, LF or NUL in path", 3)
    end
end

-- res:sendfile(path): X-Sendfile: path, so the front (Apache mod_xsendfile,
-- lighttpd) sends that file as the body. Write no body yourself.
function res:sendfile(path)
    check_front_path(path, "sendfile")
    self:set_header("X-Sendfile", path)
end

-- res:accel_redirect(uri): X-Accel-Redirect: uri, so nginx serves that
-- internal location as the response (large files without afcgi in the
-- way). Write no body yourself.
function res:accel_redirect(uri)
    check_front_path(uri, "accel_redirect")
    self:set_header("X-Accel-Redirect", uri)
end

-- ok = res:error(status[, message[, format]]): answers status (400..599)
-- with a short body naming it: text/plain "404 Not Found" and message on a
-- second line, or with format "json" {"status":404,"error":"Not Found",
-- "message":...}. Raises after the body has started.
function res:error(status, message, format)
    check_status(status, 1, "error", 400, 599)
    if message ~= nil and type(message) ~= "string" then
        util.arg_error(2, "error", "string expected, got " .. type(message))
    end
    if format ~= nil and format ~= "text" and format ~= "json" then
        util.arg_error(3, "error", "\"text\" or \"json\" expected")
    end
    local reason = core.reason(status)
    self:status(status)
    if format == "json" then
        self:set_header("Content-Type", "application/json")
        return self:write(get_json().encode({ status = status, error = reason, message = message }))
    end
    self:set_header("Content-Type", "text/plain; charset=utf-8")
    if message then
        return self:write(status, " ", reason, "\n", message, "\n")
    end
    return self:write(status, " ", reason, "\n")
end

return core
