-- afcgi.cookie: read the Cookie request header and build Set-Cookie values
-- (RFC 6265).
--
-- Values are taken and given as they are: nothing is percent-decoded or
-- encoded. To store arbitrary text in a cookie, encode it first (for example
-- with afcgi.query.escape) and decode what you read.
local util = require "afcgi.util"

local find, gmatch, lower, match, sub = string.find, string.gmatch, string.lower,
    string.match, string.sub
local concat = table.concat
local floor, huge, pairs, tostring, type = math.floor, math.huge, pairs, tostring, type

local M = {}

-- cookies = cookie.parse(header): name -> value. Tolerant: pieces without
-- "=" or with an empty name are skipped, blanks around names and values are
-- trimmed, one pair of double quotes around a value is removed. When a name
-- repeats, the first value wins (the browser sends the most specific first).
function M.parse(header)
    local cookies = {}
    if header == nil then return cookies end
    util.check_type(header, "string", 1, "parse")
    for piece in gmatch(header, "[^;]+") do
        local name, value = match(piece, "^[ \t]*([^=]-)[ \t]*=[ \t]*(.-)[ \t]*$")
        if name and name ~= "" and cookies[name] == nil then
            if #value >= 2 and sub(value, 1, 1) == '"' and sub(value, -1) == '"' then
                value = sub(value, 2, -2)
            end
            cookies[name] = value
        end
    end
    return cookies
end

-- RFC 6265 §4.1.1: a name is an HTTP token; a value is cookie-octets: no
-- controls, space, DQUOTE, comma, semicolon, backslash or non-ASCII.
local function valid_name(s)
    return find(s, "^[!#$%%&'*+%-.^_`|~0-9A-Za-z]+$") ~= nil
end

local function valid_value(s)
    return not find(s, "[%c \"%,;\\\128-\255]")
end

-- An attribute value: anything but controls and semicolons.
local function valid_attr(s)
    return not find(s, "[%c;]")
end

local SAMESITE = { strict = "Strict", lax = "Lax", none = "None" }
local OPTIONS = { path = true, domain = true, max_age = true, expires = true, secure = true,
                  httponly = true, samesite = true }

local function attr_string(opts, k, out, label)
    local v = opts[k]
    if v == nil then return end
    if type(v) ~= "string" or v == "" or not valid_attr(v) then
        return k .. " must be a non-empty string without controls or ';'"
    end
    out[#out + 1] = label .. "=" .. v
end

local function attr_max_age(opts, out)
    local v = opts.max_age
    if v == nil then return end
    if type(v) ~= "number" or v ~= floor(v) or v == huge or v == -huge then
        return "max_age must be an integer number of seconds"
    end
    out[#out + 1] = "Max-Age=" .. ("%d"):format(v)
end

local function attr_expires(opts, out)
    local v = opts.expires
    if v == nil then return end
    if type(v) == "number" then
        if v ~= v or v == huge or v == -huge or v < 0 then
            return "expires must be a time in seconds since the epoch, or a date string"
        end
        v = util.http_date(v)
    elseif type(v) ~= "string" or v == "" or not valid_attr(v) then
        return "expires must be a time in seconds since the epoch, or a date string"
    end
    out[#out + 1] = "Expires=" .. v
end

local function attrs(opts, out)
    for k in pairs(opts) do
        if not OPTIONS[k] then return "unknown option '" .. tostring(k) .. "'" end
    end
    local err = attr_string(opts, "path", out, "Path") or attr_string(opts, "domain", out, "Domain")
        or attr_max_age(opts, out) or attr_expires(opts, out)
    if err then return err end
    if opts.secure then out[#out + 1] = "Secure" end
    if opts.httponly then out[#out + 1] = "HttpOnly" end
    if opts.samesite ~= nil then
        local ss = type(opts.samesite) == "string" and SAMESITE[lower(opts.samesite)]
        if not ss then return "samesite must be \"Strict\", \"Lax\" or \"None\"" end
        if ss == "None" and not opts.secure then
            return "samesite \"None\" needs secure = true (browsers drop it otherwise)"
        end
        out[#out + 1] = "SameSite=" .. ss
    end
end

-- value, err = cookie.format(name, value[, opts]): as build, but returns
-- nil, err instead of raising (for callers that raise themselves).
function M.format(name, value, opts)
    if type(name) ~= "string" or not valid_name(name) then
        return nil, "invalid cookie name " .. (type(name) == "string" and ("%q"):format(name)
                                                or "(" .. type(name) .. ")")
    end
    if type(value) == "number" then value = tostring(value) end
    if type(value) ~= "string" or not valid_value(value) then
        return nil, "invalid cookie value for " .. name
            .. " (encode it, e.g. with afcgi.query.escape)"
    end
    if opts ~= nil and type(opts) ~= "table" then
        return nil, "options must be a table"
    end
    opts = opts or {}
    local out = { name .. "=" .. value }
    if opts.path == nil then out[2] = "Path=/" end
    local err = attrs(opts, out)
    if err then return nil, "cookie " .. name .. ": " .. err end
    return concat(out, "; ")
end

-- s = cookie.build(name, value[, opts]): a Set-Cookie value. opts: path
-- (default "/"), domain, max_age (seconds), expires (seconds since the
-- epoch, or a date string), secure, httponly, samesite ("Strict", "Lax",
-- "None"; "None" needs secure). Raises on an invalid name, value or option.
function M.build(name, value, opts)
    local s, err = M.format(name, value, opts)
    if not s then error(err, 2) end
    return s
end

return M
