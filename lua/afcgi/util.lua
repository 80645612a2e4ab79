-- afcgi.util: small helpers shared by the afcgi modules: argument checks
-- that blame the caller, HTTP reason phrases and dates, media types.
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

-- Standard reason phrases (RFC 9110 §15 and a few common extensions).
M.reasons = {
    [100] = "Continue", [101] = "Switching Protocols", [103] = "Early Hints",
    [200] = "OK", [201] = "Created", [202] = "Accepted",
    [203] = "Non-Authoritative Information", [204] = "No Content", [205] = "Reset Content",
    [206] = "Partial Content",
    [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found",
    [303] = "See Other", [304] = "Not Modified", [307] = "Temporary Redirect",
    [308] = "Permanent Redirect",
    [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
    [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
    [406] = "Not Acceptable", [407] = "Proxy Authentication Required",
    [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
    [411] = "Length Required", [412] = "Precondition Failed", [413] = "Content Too Large",
    [414] = "URI Too Long", [415] = "Unsupported Media Type", [416] = "Range Not Satisfiable",
    [417] = "Expectation Failed", [418] = "I'm a teapot", [421] = "Misdirected Request",
    [422] = "Unprocessable Content", [423] = "Locked", [424] = "Failed Dependency",
    [425] = "Too Early", [426] = "Upgrade Required", [428] = "Precondition Required",
    [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
    [451] = "Unavailable For Legal Reasons",
    [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
    [503] = "Service Unavailable", [504] = "Gateway Timeout",
    [505] = "HTTP Version Not Supported", [506] = "Variant Also Negotiates",
    [507] = "Insufficient Storage", [508] = "Loop Detected",
    [511] = "Network Authentication Required",
}

-- The reason phrase of status, or a generic one for its class.
function M.reason(status)
    local r = M.reasons[status]
    if r then return r end
    if status >= 500 then return "Server Error" end
    if status >= 400 then return "Client Error" end
    return "Unknown"
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
