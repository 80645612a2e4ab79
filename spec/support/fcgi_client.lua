-- fcgi_client: a small FastCGI 1.0 client for the specs, in plain Lua.
--
-- Independent of the server's C codec on purpose: if both shared a bug, the
-- specs would not see it. Encoders return strings, so a spec can build any
-- byte sequence (hostile ones too) and send it in one piece or byte by byte.
-- Every read on a connection has a deadline and fails with a clear message.
local bit = require "bit"
local socket = require "socket"

local band, bor, rshift = bit.band, bit.bor, bit.rshift
local byte, char, sub, concat = string.byte, string.char, string.sub, table.concat
local error, type, pairs, ipairs, tostring = error, type, pairs, ipairs, tostring

local M = {}

M.VERSION_1 = 1
M.MAX_CONTENT = 65535

-- Record types (FastCGI 1.0 §8).
M.BEGIN_REQUEST, M.ABORT_REQUEST, M.END_REQUEST = 1, 2, 3
M.PARAMS, M.STDIN, M.STDOUT, M.STDERR, M.DATA = 4, 5, 6, 7, 8
M.GET_VALUES, M.GET_VALUES_RESULT, M.UNKNOWN_TYPE = 9, 10, 11

-- Roles, flags and protocol statuses (§5.1, §5.5).
M.RESPONDER, M.AUTHORIZER, M.FILTER = 1, 2, 3
M.KEEP_CONN = 1
M.REQUEST_COMPLETE, M.CANT_MPX_CONN, M.OVERLOADED, M.UNKNOWN_ROLE = 0, 1, 2, 3

M.DEFAULT_TIMEOUT = 5

local function u16(n)
    return char(band(rshift(n, 8), 0xff), band(n, 0xff))
end

local function u32(n)
    return char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
                band(rshift(n, 8), 0xff), band(n, 0xff))
end

-- Header plus content plus padding. opts: version, padding (byte count),
-- pad_byte, reserved, length (a header length that lies about the content).
function M.record(rtype, id, content, opts)
    content = content or ""
    opts = opts or {}
    local padding = opts.padding or 0
    local len = opts.length or #content
    return char(opts.version or M.VERSION_1, rtype) .. u16(id) .. u16(len)
        .. char(padding, opts.reserved or 0) .. content
        .. string.rep(opts.pad_byte or "\0", padding)
end

-- A stream (PARAMS, STDIN, DATA) split into records of at most 65535 bytes;
-- no terminator. opts go to every record.
function M.stream_records(rtype, id, data, opts)
    local out = {}
    for i = 1, #data, M.MAX_CONTENT do
        out[#out + 1] = M.record(rtype, id, sub(data, i, i + M.MAX_CONTENT - 1), opts)
    end
    return concat(out)
end

-- Name-value length: one byte below 128, else four with the top bit set (§3.4).
-- force4 encodes a short length in four bytes, which is also legal.
function M.nv_length(n, force4)
    if n < 128 and not force4 then return char(n) end
    return u32(bor(n, 0x80000000))
end

function M.nv_pair(name, value, force4)
    name, value = tostring(name), tostring(value)
    return M.nv_length(#name, force4) .. M.nv_length(#value, force4) .. name .. value
end

-- Accepts a map {name = value} (encoded in sorted order, so bytes are stable)
-- or an ordered list { {name, value}, ... }.
function M.nv_list(t)
    if t[1] ~= nil then return t end
    local names = {}
    for k in pairs(t) do names[#names + 1] = k end
    table.sort(names)
    local list = {}
    for i, k in ipairs(names) do list[i] = { k, t[k] } end
    return list
end

function M.encode_nv(t, force4)
    local out = {}
    for i, p in ipairs(M.nv_list(t)) do out[i] = M.nv_pair(p[1], p[2], force4) end
    return concat(out)
end

local function nv_len_at(s, pos)
    local b = byte(s, pos)
    if not b then return nil end
    if b < 128 then return b, pos + 1 end
    if pos + 3 > #s then return nil end
    local b1, b2, b3 = byte(s, pos + 1, pos + 3)
    return ((b - 128) * 16777216) + b1 * 65536 + b2 * 256 + b3, pos + 4
end

-- Returns an ordered list { {name, value}, ... } and a map, or nil, err.
function M.decode_nv(s)
    local list, map, pos = {}, {}, 1
    while pos <= #s do
        local nlen, vlen
        nlen, pos = nv_len_at(s, pos)
        if nlen then vlen, pos = nv_len_at(s, pos) end
        if not vlen or pos + nlen + vlen - 1 > #s then
            return nil, "malformed name-value pair"
        end
        local name = sub(s, pos, pos + nlen - 1)
        local value = sub(s, pos + nlen, pos + nlen + vlen - 1)
        list[#list + 1] = { name, value }
        map[name] = value
        pos = pos + nlen + vlen
    end
    return list, map
end

function M.begin_body(role, flags)
    return u16(role or M.RESPONDER) .. char(flags or 0) .. "\0\0\0\0\0"
end

-- opts: role (default RESPONDER), keep_conn (default true), flags (raw byte).
function M.begin_record(id, opts)
    opts = opts or {}
    local flags = opts.flags
    if flags == nil then flags = (opts.keep_conn == false) and 0 or M.KEEP_CONN end
    return M.record(M.BEGIN_REQUEST, id, M.begin_body(opts.role, flags))
end

-- The PARAMS stream of a request, then its empty terminator unless opts.open.
function M.params_records(id, params, opts)
    opts = opts or {}
    local s = M.stream_records(M.PARAMS, id, M.encode_nv(params, opts.force4), opts)
    if opts.open then return s end
    return s .. M.record(M.PARAMS, id, "")
end

-- STDIN data split into records; "" is the terminator.
function M.stdin_records(id, data, opts)
    if data == "" then return M.record(M.STDIN, id, "", opts) end
    return M.stream_records(M.STDIN, id, data, opts)
end

-- Typical CGI params for method and uri ("/path?query"); extra overrides.
function M.cgi_params(method, uri, extra, body_len)
    local path, query = uri:match("^([^?]*)%??(.*)$")
    local p = {
        GATEWAY_INTERFACE = "CGI/1.1", SERVER_PROTOCOL = "HTTP/1.1",
        SERVER_SOFTWARE = "fcgi_client", SERVER_NAME = "localhost", SERVER_PORT = "80",
        REMOTE_ADDR = "127.0.0.1", REMOTE_PORT = "54321",
        REQUEST_METHOD = method, REQUEST_URI = uri, DOCUMENT_URI = path,
        SCRIPT_NAME = path, QUERY_STRING = query,
    }
    if body_len then p.CONTENT_LENGTH = tostring(body_len) end
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
end

-- Decodes one record at pos; returns rec, next_pos, or nil when more bytes are needed.
function M.decode_record(buf, pos)
    pos = pos or 1
    if #buf - pos + 1 < 8 then return nil end
    local ver, rtype, id1, id0, l1, l0, padding, reserved = byte(buf, pos, pos + 7)
    local len = l1 * 256 + l0
    local stop = pos + 8 + len + padding
    if #buf < stop - 1 then return nil end
    local rec = {
        version = ver, type = rtype, id = id1 * 256 + id0, padding = padding,
        reserved = reserved, content = sub(buf, pos + 8, pos + 7 + len),
    }
    return M.parse_body(rec), stop
end

-- Adds the decoded fields of END_REQUEST, UNKNOWN_TYPE and GET_VALUES_RESULT.
function M.parse_body(rec)
    local c = rec.content
    if rec.type == M.END_REQUEST and #c == 8 then
        local a, b, cc, d = byte(c, 1, 4)
        rec.app_status = ((a * 256 + b) * 256 + cc) * 256 + d
        rec.protocol_status = byte(c, 5)
    elseif rec.type == M.UNKNOWN_TYPE and #c == 8 then
        rec.unknown_type = byte(c, 1)
    elseif rec.type == M.GET_VALUES_RESULT then
        rec.pairs, rec.values = M.decode_nv(c)
    end
    return rec
end

-- Splits a CGI response: status (from Status:, 200 if absent; nil when there
-- is no output at all), headers (lower-case name -> value, or a list when
-- repeated) and body.
function M.parse_cgi(out)
    if out == "" then return nil, {}, "" end
    local head_end, body_start = out:find("\r\n\r\n", 1, true)
    if not head_end then head_end, body_start = out:find("\n\n", 1, true) end
    if not head_end then return nil, {}, out end
    local headers = {}
    for line in (out:sub(1, head_end - 1) .. "\n"):gmatch("([^\n]*)\n") do
        local name, value = line:gsub("\r$", ""):match("^([^:]+):%s*(.-)%s*$")
        if name then
            name = name:lower()
            local old = headers[name]
            if old == nil then headers[name] = value
            elseif type(old) == "table" then old[#old + 1] = value
            else headers[name] = { old, value } end
        end
    end
    local status = 200
    if headers.status then status = tonumber(tostring(headers.status):match("^(%d+)")) end
    return status, headers, out:sub(body_start + 1)
end

-- Connection ---------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

-- addr: a port number, "host:port", "[v6]:port" or "unix:/path".
-- opts: timeout (seconds, default 5) for every read and send.
function M.connect(addr, opts)
    opts = opts or {}
    local sock, ok, err
    addr = tostring(addr)
    local path = addr:match("^unix:(.+)$")
    if path then
        sock = require("socket.unix")()
        sock:settimeout(opts.timeout or M.DEFAULT_TIMEOUT)
        ok, err = sock:connect(path)
    else
        local host, port = addr:match("^%[(.+)%]:(%d+)$")
        if not host then host, port = addr:match("^(.+):(%d+)$") end
        if not host then host, port = "127.0.0.1", addr end
        sock = host:find(":", 1, true) and socket.tcp6() or socket.tcp()
        sock:settimeout(opts.timeout or M.DEFAULT_TIMEOUT)
        ok, err = sock:connect(host, tonumber(port))
        if ok then sock:setoption("tcp-nodelay", true) end
    end
    if not ok then error("fcgi_client: cannot connect to " .. addr .. ": " .. tostring(err), 2) end
    return setmetatable({
        sock = sock, addr = addr, timeout = opts.timeout or M.DEFAULT_TIMEOUT,
        buf = "", pos = 1, -- received bytes; those from pos on are not decoded yet
        pending = {},     -- decoded records not yet handed out, in arrival order
        ends = {},        -- id -> END_REQUEST records received so far
        eof = false,
    }, Conn)
end

function Conn:close()
    if self.sock then self.sock:close(); self.sock = nil end
end

-- While corked, sends are collected and go out in one write on uncork().
function Conn:cork() self.corked = self.corked or {} end

function Conn:uncork()
    local parts = self.corked
    self.corked = nil
    if parts and #parts > 0 then self:send_raw(concat(parts)) end
end

-- Sends bytes, all of them, or fails after the timeout (or if the peer closed).
function Conn:send_raw(data)
    if self.corked then self.corked[#self.corked + 1] = data; return self end
    local deadline = socket.gettime() + self.timeout
    local sent = 0
    while sent < #data do
        self.sock:settimeout(math.max(0, deadline - socket.gettime()))
        local last, err, partial = self.sock:send(data, sent + 1)
        sent = last or partial or sent
        if not last and (err ~= "timeout" or socket.gettime() >= deadline) then
            error(("fcgi_client: send failed after %d of %d bytes: %s")
                  :format(sent, #data, err), 2)
        end
    end
    return self
end

-- The same bytes, one write per byte (tcp-nodelay is on).
function Conn:send_bytewise(data)
    for i = 1, #data do self:send_raw(sub(data, i, i)) end
    return self
end

function Conn:begin(id, opts) return self:send_raw(M.begin_record(id, opts)) end
function Conn:params(id, params, opts) return self:send_raw(M.params_records(id, params, opts)) end
function Conn:stdin(id, data) return self:send_raw(M.stdin_records(id, data)) end
function Conn:abort(id) return self:send_raw(M.record(M.ABORT_REQUEST, id, "")) end

-- Decodes the next record from the socket; nil, "closed" | "timeout" otherwise.
function Conn:recv_record(deadline)
    while true do
        local rec, stop = M.decode_record(self.buf, self.pos)
        if rec then
            self.pos = stop
            if rec.type == M.END_REQUEST then
                self.ends[rec.id] = (self.ends[rec.id] or 0) + 1
            end
            return rec
        end
        if self.eof or not self.sock then return nil, "closed" end
        local left = deadline - socket.gettime()
        if left <= 0 then return nil, "timeout" end
        -- receive(n) would wait for all n bytes: wait for readability, then
        -- take whatever is there without blocking.
        socket.select({ self.sock }, nil, left)
        self.sock:settimeout(0)
        local data, err, partial = self.sock:receive(65536)
        data = data or partial
        if data and #data > 0 then
            self.buf, self.pos = sub(self.buf, self.pos) .. data, 1
        end
        if err and err ~= "timeout" then self.eof, self.eof_err = true, err end
    end
end

local function fail_read(self, err, timeout, what)
    if err == "timeout" then
        error(("fcgi_client: timed out after %.1f s waiting for %s"):format(timeout, what), 3)
    end
    error(("fcgi_client: connection closed by the server while waiting for %s%s"):format(
        what, self:partial_bytes() > 0
            and (" (" .. self:partial_bytes() .. " bytes of a partial record)") or ""), 3)
end

-- The next record: a buffered one first, else from the socket. Raises on
-- timeout or when the server closed the connection.
function Conn:read_record(timeout)
    if #self.pending > 0 then return table.remove(self.pending, 1) end
    timeout = timeout or self.timeout
    local rec, err = self:recv_record(socket.gettime() + timeout)
    if not rec then fail_read(self, err, timeout, "a record") end
    return rec
end

-- Sends GET_VALUES for names and returns the answer as a map name -> value.
function Conn:get_values(names, timeout)
    local list = {}
    for i, n in ipairs(names) do list[i] = { n, "" } end
    self:send_raw(M.record(M.GET_VALUES, 0, M.encode_nv(list)))
    local rec = self:read_matching(function(r) return r.type == M.GET_VALUES_RESULT end,
                                   timeout, "GET_VALUES_RESULT")
    return rec.values, rec
end

-- Reads until a record satisfies pred; the others stay buffered in order.
function Conn:read_matching(pred, timeout, what)
    for i, rec in ipairs(self.pending) do
        if pred(rec) then return table.remove(self.pending, i) end
    end
    timeout = timeout or self.timeout
    local deadline = socket.gettime() + timeout
    while true do
        local rec, err = self:recv_record(deadline)
        if not rec then fail_read(self, err, timeout, what or "a matching record") end
        if pred(rec) then return rec end
        self.pending[#self.pending + 1] = rec
    end
end

-- Collects the records of request id up to its END_REQUEST; records of other
-- ids are kept for their own calls. timeout covers the whole response.
function Conn:read_response(id, timeout)
    timeout = timeout or self.timeout
    local deadline = socket.gettime() + timeout
    local out, err, n, max, ended = {}, {}, 0, 0, false
    local pred = function(r) return r.id == id end
    while true do
        local rec = self:read_matching(pred, math.max(0, deadline - socket.gettime()),
                                       "the END_REQUEST of request " .. id)
        if rec.type == M.STDOUT then
            if #rec.content == 0 then ended = true
            else
                out[#out + 1] = rec.content
                n = n + 1
                if #rec.content > max then max = #rec.content end
            end
        elseif rec.type == M.STDERR then
            err[#err + 1] = rec.content
        elseif rec.type == M.END_REQUEST then
            local stdout = concat(out)
            local status, headers, body = M.parse_cgi(stdout)
            return {
                id = id, status = status, headers = headers, body = body, stdout = stdout,
                stderr = concat(err), app_status = rec.app_status,
                protocol_status = rec.protocol_status, stdout_records = n, max_record = max,
                stdout_ended = ended,
            }
        end
    end
end

-- begin + params + body + terminator, then the response. params: a table, or
-- a uri string expanded with cgi_params (GET, or POST when there is a body).
function Conn:request(id, params, body, opts)
    body = body or ""
    if type(params) == "string" then
        params = M.cgi_params(body ~= "" and "POST" or "GET", params, nil, #body)
    end
    self:cork()
    self:begin(id, opts)
    self:params(id, params or {})
    if body ~= "" then self:stdin(id, body) end
    self:stdin(id, "")
    self:uncork()
    return self:read_response(id, opts and opts.timeout)
end

-- True once the server has closed the connection (records that arrive first
-- are kept for later reads); false if it is still open after timeout seconds.
function Conn:closed_by_peer(timeout)
    local deadline = socket.gettime() + (timeout or self.timeout)
    while true do
        local rec, err = self:recv_record(deadline)
        if not rec then return err == "closed" end
        self.pending[#self.pending + 1] = rec
    end
end

function Conn:partial_bytes() return #self.buf - self.pos + 1 end

-- Number of END_REQUEST records received so far for id.
function Conn:end_count(id) return self.ends[id] or 0 end

return M
