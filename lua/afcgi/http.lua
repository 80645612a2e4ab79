-- afcgi.http: an HTTP/1.1 client for handlers, on afcgi.socket. Each call
-- yields the calling coroutine only; connections go back to the keepalive
-- pool when the response allows it.
--
--   local http = require "afcgi.http"
--   local res, err = http.request("http://127.0.0.1:8080/api", {
--       method = "POST", body = "...", headers = { ["Content-Type"] = "text/plain" },
--       timeout = 5,            -- seconds, for connect, each send and each read (default 10)
--       keepalive = true,       -- reuse through the pool (default); false: Connection: close
--       keepalive_timeout = 60, -- seconds a pooled connection may idle (default 60)
--       pool_size = 30,         -- idle connections kept per host and port (default 30)
--       max_body = 64 * 2^20,   -- larger responses fail with "response body too large"
--       ssl_verify = true,      -- https: verify the certificate and its name (default)
--       ssl_server_name = nil,  -- https: SNI and the name checked (default: the URL's host)
--   })
--   res.status, res.reason, res.headers["content-type"], res.body, res.reused
--
-- Response headers are keyed by lower-case name; a repeated header's values
-- are joined with ", ", except Set-Cookie, which is a list. http.get(url,
-- opts) and http.post(url, body, opts) are shorthands. https URLs go over
-- TLS (sock:sslhandshake), verified against the system's CAs and
-- --lua-ssl-trusted-certificate unless ssl_verify = false; https and http
-- connections, and https ones made for other names or without
-- verification, keep to pools of their own.
local afcgi = require "afcgi"

local M = {}

local DEFAULT_TIMEOUT = 10
local DEFAULT_MAX_BODY = 64 * 1024 * 1024
local MAX_HEAD = 64 * 1024          -- status line and headers, bytes
local MAX_HEADERS = 100
local READ_PIECE = 65536            -- a body delimited by the end of the connection
local USER_AGENT = "afcgi/" .. afcgi.version

local DEFAULT_PORT = { http = 80, https = 443 }

-- host, port, path, scheme of an absolute URL; or nil, err.
local function parse_url(url)
    local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
    if not scheme then return nil, "bad url (absolute http:// URL expected): " .. url end
    scheme = scheme:lower()
    if not DEFAULT_PORT[scheme] then
        return nil, "unsupported scheme " .. scheme .. ": " .. url
    end
    local authority, path = rest:match("^([^/?#]*)(.*)$")
    path = path:gsub("#.*$", "")
    if path == "" or path:sub(1, 1) == "?" then path = "/" .. path end
    local host, port = authority:match("^(%[[^%]]+%]):?(%d*)$")
    if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
    if not host or host == "" then return nil, "bad url (no host): " .. url end
    port = port ~= "" and tonumber(port) or DEFAULT_PORT[scheme]
    if port < 1 or port > 65535 then return nil, "bad url (port): " .. url end
    return host, port, path, scheme
end
M.parse_url = parse_url

-- Header lines from opts.headers; nil, err for a name or value that would
-- split the request (CR, LF, or a name that is not a token).
local function header_lines(out, headers, seen)
    for name, value in pairs(headers or {}) do
        name = tostring(name)
        if not name:match("^[!#$%%&'*+.^_`|~%w-]+$") then
            return nil, "bad header name: " .. name:sub(1, 40)
        end
        local values = type(value) == "table" and value or { value }
        for _, v in ipairs(values) do
            v = tostring(v)
            if v:find("[\r\n]") then return nil, "CR or LF in the value of header " .. name end
            out[#out + 1] = name .. ": " .. v .. "\r\n"
        end
        seen[name:lower()] = true
    end
    return true
end

-- s from position i without leading and trailing blanks, in linear time
-- (a pattern such as "^%s*(.-)%s*$" is quadratic on a long run of spaces).
local function trim(s, i)
    local a = s:find("[^ \t]", i)
    if not a then return "" end
    local b = #s
    while b > a do
        local c = s:byte(b)
        if c ~= 32 and c ~= 9 then break end
        b = b - 1
    end
    return s:sub(a, b)
end

-- Reads the status line and headers: status, reason, headers, version.
-- At most MAX_HEAD bytes and MAX_HEADERS lines; trimming is linear.
-- status, reason, headers, version; or nil, err, stale (stale: not a byte
-- came before the connection ended: a pooled one the server had closed)
local function read_head(sock)
    local line, err, partial = sock:receive()
    if not line then
        return nil, "reading the status line: " .. err, (err == "closed"
            or err == "connection reset by peer") and (partial == nil or partial == "")
    end
    local size = #line
    if size > MAX_HEAD then return nil, "response head too large" end
    local version, status, reason = line:match("^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
    if not version then return nil, "bad status line: " .. line:sub(1, 80) end
    local headers, count = {}, 0
    while true do
        line, err = sock:receive()
        if not line then return nil, "reading headers: " .. err end
        if line == "" then break end
        size, count = size + #line + 2, count + 1
        if size > MAX_HEAD or count > MAX_HEADERS then return nil, "response head too large" end
        local colon = line:find(":", 1, true)
        local name = colon and line:sub(1, colon - 1)
        if not name or not name:match("^[!#$%%&'*+.^_`|~%w-]+$") then
            return nil, "bad header line: " .. line:sub(1, 80)
        end
        local value = trim(line, colon + 1)
        name = name:lower()
        if name == "set-cookie" then
            local list = headers[name] or {}
            list[#list + 1] = value
            headers[name] = list
        elseif headers[name] then
            headers[name] = headers[name] .. ", " .. value
        else
            headers[name] = value
        end
    end
    return tonumber(status), reason, headers, version
end

local function read_chunked(sock, max)
    local parts, total = {}, 0
    while true do
        local line, err = sock:receive()
        if not line then return nil, "reading a chunk size: " .. err end
        local hex = line:match("^%s*(%x+)")
        local size = hex and #hex <= 12 and tonumber(hex, 16)
        if not size then return nil, "bad chunk size: " .. line:sub(1, 40) end
        if size == 0 then break end
        total = total + size
        if total > max then return nil, "response body too large" end
        local data
        data, err = sock:receive(size)
        if not data then return nil, "reading a chunk: " .. err end
        parts[#parts + 1] = data
        local crlf
        crlf, err = sock:receive()
        if crlf ~= "" then return nil, "bad chunk end: " .. tostring(err or crlf) end
    end
    while true do                           -- trailer fields, then the empty line
        local line, err = sock:receive()
        if not line then return nil, "reading the trailer: " .. err end
        if line == "" then break end
    end
    return table.concat(parts)
end

-- Methods sent again on a new connection when a pooled one turns out closed
-- (RFC 9110 9.2.2), and how many pooled connections one request may find so.
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true,
                     TRACE = true }
local STALE_TRIES = 32

-- The body, and whether the connection may be reused after it.
local function read_body(sock, method, status, headers, max)
    if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
        return "", true
    end
    local te = headers["transfer-encoding"]
    if te and te:lower():find("chunked", 1, true) then
        local body, err = read_chunked(sock, max)
        return body, body ~= nil, err
    end
    local cl = headers["content-length"]
    if cl then
        local n = tonumber(cl)
        if not n or n < 0 or n % 1 ~= 0 then return nil, false, "bad content-length: " .. cl end
        if n > max then return nil, false, "response body too large" end
        if n == 0 then return "", true end
        local body, err = sock:receive(n)
        if not body then return nil, false, "reading the body: " .. err end
        return body, true
    end
    local parts, total = {}, 0            -- delimited by the end of the connection
    while true do
        local piece, err = sock:receiveany(READ_PIECE)
        if not piece then
            if err == "closed" then break end
            return nil, false, "reading the body: " .. err
        end
        total = total + #piece
        if total > max then return nil, false, "response body too large" end
        parts[#parts + 1] = piece
    end
    return table.concat(parts), false
end

-- res, err = http.request(url, opts)
function M.request(url, opts)
    opts = opts or {}
    local host, port, path, scheme = parse_url(url)
    if not host then return nil, port end
    local method = (opts.method or "GET"):upper()
    local body = opts.body
    if body ~= nil and type(body) ~= "string" then
        return nil, "body must be a string"
    end
    local timeout_ms = (opts.timeout or DEFAULT_TIMEOUT) * 1000
    local keepalive = opts.keepalive ~= false

    if not method:match("^[!#$%%&'*+.^_`|~%w-]+$") then
        return nil, "bad method: " .. method:sub(1, 40)
    end
    if path:find("[%s%c]") then
        return nil, "bad url (spaces or control characters in the path)"
    end
    local out, seen = { method, " ", path, " HTTP/1.1\r\n" }, {}
    local hok, herr = header_lines(out, opts.headers, seen)
    if not hok then return nil, herr end
    if not seen.host then
        out[#out + 1] = "Host: " .. host .. (port ~= DEFAULT_PORT[scheme] and (":" .. port) or "")
            .. "\r\n"
    end
    if not seen["user-agent"] then out[#out + 1] = "User-Agent: " .. USER_AGENT .. "\r\n" end
    if body and not seen["content-length"] and not seen["transfer-encoding"] then
        out[#out + 1] = "Content-Length: " .. #body .. "\r\n"
    elseif not body and (method == "POST" or method == "PUT") and not seen["content-length"] then
        out[#out + 1] = "Content-Length: 0\r\n"
    end
    if not keepalive and not seen.connection then out[#out + 1] = "Connection: close\r\n" end
    out[#out + 1] = "\r\n"
    if body then out[#out + 1] = body end

    local addr = host:gsub("^%[(.*)%]$", "%1")
    local tls = scheme == "https"
    local verify = opts.ssl_verify ~= false
    local server_name = opts.ssl_server_name or addr
    local function open()
        local sock = afcgi.socket.tcp()
        sock:settimeout(timeout_ms)
        local ok, err = sock:connect(addr, port, {
            -- TLS connections pool apart from plain ones, per name and verification
            pool = tls and table.concat({ "https", addr, port, server_name, tostring(verify) }, ":")
                or nil,
            pool_size = opts.pool_size,
        })
        if not ok then return nil, "connect to " .. host .. ":" .. port .. ": " .. err end
        if tls and sock:getreusedtimes() == 0 then
            ok, err = sock:sslhandshake(false, server_name, verify)
            if not ok then return nil, "TLS with " .. host .. ":" .. port .. ": " .. err end
        end
        return sock
    end

    -- A keepalive connection the server closed while it sat in the pool
    -- fails before a byte of the answer comes: an idempotent request goes
    -- again, on the next pooled connection or a new one (as browsers and
    -- Go's net/http do). Each such try uses a pooled connection up.
    local sock, reused, status, reason, headers, version, err
    for try = 1, STALE_TRIES do
        local sent, stale
        sock, err = open()
        if not sock then return nil, err end
        reused = sock:getreusedtimes()
        sent, err = sock:send(out)
        if not sent then
            reason, stale = "sending the request: " .. err, true
        else
            status, reason, headers, version = read_head(sock)
            stale = not status and headers
        end
        if status or not (stale and reused > 0 and IDEMPOTENT[method] and try < STALE_TRIES) then
            break
        end
        sock:close()
    end
    while status and status < 200 and status ~= 101 do -- 1xx (100 Continue, 103 Early Hints)
        status, reason, headers, version = read_head(sock)
    end
    if not status then
        sock:close()
        return nil, reason
    end
    local data, reusable
    local max = opts.max_body or DEFAULT_MAX_BODY
    data, reusable, err = read_body(sock, method, status, headers, max)
    if not data then
        sock:close()
        return nil, err
    end
    local conn = (headers.connection or ""):lower()
    if keepalive and reusable and not conn:find("close", 1, true)
        and (version == "1.1" or conn:find("keep-alive", 1, true)) then
        if not sock:setkeepalive((opts.keepalive_timeout or 60) * 1000, opts.pool_size) then
            sock:close()
        end
    else
        sock:close()
    end
    return { status = status, reason = reason, headers = headers, body = data, reused = reused }
end

function M.get(url, opts)
    return M.request(url, opts)
end

function M.post(url, body, opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.method, o.body = o.method or "POST", body
    return M.request(url, o)
end

return M
