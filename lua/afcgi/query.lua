-- afcgi.query: application/x-www-form-urlencoded, the format of query
-- strings and of HTML form bodies (WHATWG URL §5).
--
-- Decoding is lenient: "+" is a space, %XX a byte, and a malformed escape
-- ("%zz", a lone "%") stays as it is. A name without "=" gets the value true
-- (as OpenResty's ngx.req.get_uri_args), "name=" gets "". A repeated name
-- gets a list of its values in order. Empty names are skipped.
local util = require "afcgi.util"

local byte, char, find, format, gmatch, gsub, sub =
    string.byte, string.char, string.find, string.format, string.gmatch, string.gsub, string.sub
local concat, sort = table.concat, table.sort
local ipairs, pairs, tonumber, tostring, type = ipairs, pairs, tonumber, tostring, type

local M = {}

-- Pairs decoded at most; more gives "truncated" (hash flooding, huge forms).
M.MAX_ARGS = 1000

local function hex_to_char(h)
    return char(tonumber(h, 16))
end

local function char_to_hex(c)
    return format("%%%02X", byte(c))
end

-- s = query.unescape(s): "+" to space and %XX to bytes; malformed escapes kept.
function M.unescape(s)
    util.check_type(s, "string", 1, "unescape")
    if find(s, "+", 1, true) then s = gsub(s, "+", " ") end
    if find(s, "%", 1, true) then s = gsub(s, "%%(%x%x)", hex_to_char) end
    return s
end
local unescape = M.unescape

-- s = query.escape(s): every byte but A-Z a-z 0-9 - . _ ~ as %XX (a space is
-- %20), so the result is safe in a query, a form body and a path segment.
function M.escape(s)
    local t = type(s)
    if t == "number" then s = tostring(s)
    elseif t ~= "string" then util.arg_error(1, "escape", "string expected, got " .. t) end
    return (gsub(s, "[^A-Za-z0-9%-%._~]", char_to_hex))
end
local escape = M.escape

local function add(t, k, v)
    local old = t[k]
    if old == nil then
        t[k] = v
    elseif type(old) == "table" then
        old[#old + 1] = v
    else
        t[k] = { old, v }
    end
end

-- args, err = query.decode(s[, max]): name -> value (a string, true, or a
-- list of them for a repeated name). More than max pairs (default
-- query.MAX_ARGS): the first max, and err == "truncated".
function M.decode(s, max)
    util.check_type(s, "string", 1, "decode")
    util.check_type(max, "number", 2, "decode", true)
    max = max or M.MAX_ARGS
    local args, n = {}, 0
    for pair in gmatch(s, "[^&]+") do
        n = n + 1
        if n > max then return args, "truncated" end
        local eq = find(pair, "=", 1, true)
        local k, v
        if eq then
            k, v = unescape(sub(pair, 1, eq - 1)), unescape(sub(pair, eq + 1))
        else
            k, v = unescape(pair), true
        end
        if k ~= "" then add(args, k, v) end
    end
    return args
end

local function encode_value(out, k, v, depth)
    local t = type(v)
    if t == "string" or t == "number" then
        out[#out + 1] = k .. "=" .. escape(v)
    elseif v == true then
        out[#out + 1] = k
    elseif t == "table" and depth == 0 then
        for _, item in ipairs(v) do
            local err = encode_value(out, k, item, 1)
            if err then return err end
        end
    elseif v ~= false then
        return "bad value for '" .. k .. "' (" .. t .. ")"
    end
end

-- s = query.encode(args): the reverse of decode, names sorted so the result
-- is stable. Values: strings, numbers, true (name alone), false (left out),
-- or a list of those. Raises on anything else.
function M.encode(args)
    util.check_type(args, "table", 1, "encode")
    local names = {}
    for k in pairs(args) do
        local t = type(k)
        if t ~= "string" and t ~= "number" then
            util.arg_error(1, "encode", "bad name (" .. t .. ")")
        end
        names[#names + 1] = k
    end
    sort(names, function(a, b) return tostring(a) < tostring(b) end)
    local out = {}
    for _, k in ipairs(names) do
        local err = encode_value(out, escape(k), args[k], 0)
        if err then util.arg_error(1, "encode", err) end
    end
    return concat(out, "&")
end

return M
