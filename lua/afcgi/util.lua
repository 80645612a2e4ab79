-- afcgi.util: small helpers shared by the afcgi modules: argument checks
-- that blame the caller, HTTP dates, media types.
local error, type, tostring = error, type, tostring
local format, lower, match = string.format, string.lower, string.match
local date, floor = os.date, math.floor

local M = {}

-- Raises "bad argument #n to 'fname' (msg)" at the caller of the caller
-- (level 3: the function that called the API function that checks).
function M.arg_error(n, fname, msg, level)
    error(format("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 2) + 1)
end

-- Raises unless type(v) == want (or v == nil when optional).
function M.check_type(v, want, n, fname, optional)
    local t = type(v)
    if t ~= want and not (optional and v == nil) then
        M.arg_error(n, fname, want .. " expected, got " .. t, 3)
    end
end

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                 "Nov", "Dec" }

-- "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate, RFC 9110 §5.6.7) for t
-- seconds since the epoch. Built by hand: os.date's %a and %b follow the
-- locale.
function M.http_date(t)
    local d = date("!*t", floor(t))
    return format("%s, %02d %s %04d %02d:%02d:%02d GMT", DAYS[d.wday], d.day,
                  MONTHS[d.month], d.year, d.hour, d.min, d.sec)
end

-- The media type of a Content-Type value, lower-case without parameters
-- ("text/html; charset=utf-8" -> "text/html"), or nil.
function M.media_type(content_type)
    if type(content_type) ~= "string" then return nil end
    local mt = match(content_type, "^[ \t]*([^;%s]+)")
    return mt and lower(mt)
end

-- True when s (converted with tostring) holds a CR, LF or NUL.
function M.has_crlf(s)
    return match(tostring(s), "[\r\n%z]") ~= nil
end

return M
