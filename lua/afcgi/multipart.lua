-- afcgi.multipart: a streaming multipart/form-data parser (RFC 7578, RFC
-- 2046 §5.1). It is fed the body in pieces of any size and hands each part
-- to callbacks as it goes: a part's headers, its content in pieces, its end.
-- It holds at most one part's header block and a delimiter's length of
-- content, so a file part of any size passes through in bounded memory.
--
--     ok, err = multipart.parse(read, content_type, handlers[, opts])
--     form, err = multipart.collect(read, content_type[, opts])
--
-- Malformed input, a handler's error or a failed read give nil, err.
local util = require "afcgi.util"

local find, lower, match, sub, gsub, gmatch = string.find, string.lower, string.match,
    string.sub, string.gsub, string.gmatch
local char, concat = string.char, table.concat
local open, remove = io.open, os.remove
local os = os
local getmetatable, ipairs, newproxy, pairs, pcall, setmetatable, tonumber, tostring, type =
    getmetatable, ipairs, newproxy, pairs, pcall, setmetatable, tonumber, tostring, type

local M = {}

M.MAX_HEADER = 16384     -- bytes of one part's header block
M.MAX_PARTS = 1000       -- parts in one body
M.MAX_FIELD = 1048576    -- collect: bytes of one non-file field

-- boundary, err = multipart.boundary(content_type): the boundary parameter
-- of a multipart/form-data Content-Type; nil, "not multipart/form-data" or
-- nil, "no boundary".
function M.boundary(content_type)
    if util.media_type(content_type) ~= "multipart/form-data" then
        return nil, "not multipart/form-data"
    end
    local _, e = find(lower(content_type), ";[ \t]*boundary[ \t]*=[ \t]*")
    if not e then return nil, "no boundary" end
    local rest = sub(content_type, e + 1)
    local b = match(rest, '^"([^"]*)"') or match(rest, "^([^;%s]+)")
    -- RFC 2046: 1 to 70 characters; no controls (a CR or LF would let the
    -- delimiter span lines).
    if not b or #b == 0 or #b > 70 or find(b, "%c") then return nil, "no boundary" end
    return b
end

-- Part headers -------------------------------------------------------------

local function pct_decode(s)
    return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- Parameters of a Content-Disposition value: form-data; name="a"; filename="b".
-- Quoted strings end at the next '"' (browsers send '"' as %22 and never
-- escape with backslashes, RFC 7578 §4.2). name*= / filename*= (RFC 8187)
-- in UTF-8 take precedence over the plain form.
local function disposition_params(v)
    local params, ext = {}, {}
    local pos = (match(v, "^[ \t]*[^;]*()")) or 1
    for _ = 1, 64 do
        local s, e, key = find(v, "^[ \t]*;[ \t]*([^=;%s]+)[ \t]*=[ \t]*", pos)
        if not s then break end
        key = lower(key)
        local value
        if sub(v, e + 1, e + 1) == '"' then
            local q = find(v, '"', e + 2, true)
            if not q then return nil end
            value, pos = sub(v, e + 2, q - 1), q + 1
        else
            value = match(v, "^[^;]*", e + 1)
            pos = e + 1 + #value
            value = match(value, "^(.-)[ \t]*$")
        end
        if sub(key, -1) == "*" then
            local charset, enc = match(value, "^([^']*)'[^']*'(.*)$")
            if charset and (lower(charset) == "utf-8" or lower(charset) == "us-ascii") then
                ext[sub(key, 1, -2)] = pct_decode(enc)
            end
        else
            params[key] = value
        end
    end
    for k, val in pairs(ext) do params[k] = val end
    return params
end

-- part, err: parse a header block (lines separated by CRLF, no final CRLF).
local function parse_headers(block)
    local headers, last = {}, nil
    if block ~= "" then
        for line in gmatch(block .. "\r\n", "(.-)\r\n") do
            if find(line, "^[ \t]") and last then            -- obsolete line folding
                headers[last] = headers[last] .. " " .. match(line, "^[ \t]*(.-)[ \t]*$")
            else
                local name, value = match(line, "^([^:%s]+)[ \t]*:[ \t]*(.-)[ \t]*$")
                if not name then return nil, "malformed multipart: bad part header" end
                last = lower(name)
                headers[last] = value
            end
        end
    end
    local part = { headers = headers, content_type = headers["content-type"] }
    local cd = headers["content-disposition"]
    if cd then
        local params = disposition_params(cd)
        if not params then return nil, "malformed multipart: bad content-disposition" end
        part.name, part.filename = params.name, params.filename
    end
    return part
end

-- Parser -------------------------------------------------------------------

local Parser = {}
local parser_mt = { __index = Parser }

-- parser = multipart.new(boundary, handlers[, opts]). handlers (all
-- optional): part(part), data(part, chunk), part_end(part). part has name,
-- filename, content_type (nil when absent) and headers (lower-case names).
-- A handler that returns false, or a second value (an error), stops the
-- parser: feed then returns nil, that error (or "stopped").
-- opts: max_header (bytes, default M.MAX_HEADER), max_parts (M.MAX_PARTS).
function M.new(boundary, handlers, opts)
    util.check_type(boundary, "string", 1, "new")
    util.check_type(handlers, "table", 2, "new")
    util.check_type(opts, "table", 3, "new", true)
    opts = opts or {}
    return setmetatable({
        delim = "\r\n--" .. boundary,
        buf = "\r\n",          -- lets the first delimiter stand at the very start
        state = "preamble",    -- preamble, after_delim, headers, body, done
        handlers = handlers,
        parts = 0,
        max_header = opts.max_header or M.MAX_HEADER,
        max_parts = opts.max_parts or M.MAX_PARTS,
    }, parser_mt)
end

-- Calls a handler; false or a second value stops the parser.
local function call(self, fn, ...)
    if not fn then return true end
    local ok, err = fn(...)
    if ok == false or err ~= nil then
        self.err = err ~= nil and tostring(err) or "stopped"
        return nil
    end
    return true
end

local function fail(self, err)
    self.err = err
    return nil, err
end

-- The states of the parser. Each takes the buffer and a position, and
-- returns the next position and whether to go on (false: needs more input),
-- or nil on an error (self.err set).
local step = {}

function step.preamble(self, buf, pos)
    local delim = self.delim
    local _, j = find(buf, delim, pos, true)
    if not j then   -- keep only what may start a delimiter
        local keep = #buf - #delim + 1
        return keep > pos and keep or pos, false
    end
    self.state = "after_delim"
    return j + 1, true
end

function step.after_delim(self, buf, pos)
    local _, e = find(buf, "^[ \t]*\r\n", pos)   -- transport padding, then CRLF
    if e then
        self.state = "headers"
        return e - 1, true                            -- keep the CRLF: see headers
    end
    if sub(buf, pos, pos + 1) == "--" then
        self.state = "done"
        return #buf + 1, false
    end
    local rest = sub(buf, pos)
    if (rest == "-" or find(rest, "^[ \t]*\r?$")) and #rest < 256 then
        return pos, false
    end
    return fail(self, "malformed multipart: bad delimiter line")
end

-- buf at pos holds the CRLF that ended the delimiter line; the header block
-- ends at the first CRLF CRLF from there (at once when there are no headers).
function step.headers(self, buf, pos)
    local i, j = find(buf, "\r\n\r\n", pos, true)
    if not i then
        if #buf - pos > self.max_header then return fail(self, "part headers too large") end
        return pos, false
    end
    if i - pos > self.max_header then return fail(self, "part headers too large") end
    self.parts = self.parts + 1
    if self.parts > self.max_parts then return fail(self, "too many parts") end
    local part, err = parse_headers(sub(buf, pos + 2, i - 1))
    if not part then return fail(self, err) end
    self.part, self.state = part, "body"
    if not call(self, self.handlers.part, part) then return nil end
    return j + 1, true
end

function step.body(self, buf, pos)
    local delim, h, part = self.delim, self.handlers, self.part
    local i, j = find(buf, delim, pos, true)
    if i then
        if i > pos and not call(self, h.data, part, sub(buf, pos, i - 1)) then return nil end
        self.part, self.state = nil, "after_delim"
        if not call(self, h.part_end, part) then return nil end
        return j + 1, true
    end
    -- Keep only a tail that could begin a delimiter (it starts with CR and
    -- is a prefix of delim); usually there is none and buf goes out whole,
    -- without a copy.
    local n, keep = #buf, #buf + 1
    local cr = find(buf, "\r", n - #delim + 2 > pos and n - #delim + 2 or pos, true)
    while cr do
        if sub(buf, cr) == sub(delim, 1, n - cr + 1) then
            keep = cr
            break
        end
        cr = find(buf, "\r", cr + 1, true)
    end
    if keep > pos then
        local piece = (pos == 1 and keep > n) and buf or sub(buf, pos, keep - 1)
        if not call(self, h.data, part, piece) then return nil end
    end
    return keep, false
end

-- ok, err = parser:feed(chunk): parses chunk, calling the handlers. After
-- the closing delimiter the rest (the epilogue) is ignored.
function Parser:feed(chunk)
    util.check_type(chunk, "string", 1, "feed")
    if self.err then return nil, self.err end
    if self.state == "done" then return true end
    local buf = self.buf
    buf = buf == "" and chunk or buf .. chunk
    local pos, more = 1, true
    while more do
        pos, more = step[self.state](self, buf, pos)
        if not pos then
            self.buf = ""
            return nil, self.err
        end
    end
    self.buf = self.state == "done" and "" or sub(buf, pos)
    return true
end

-- ok, err = parser:finish(): the body has ended; nil,
-- "malformed multipart: unexpected end of body" unless it was complete.
function Parser:finish()
    if self.err then return nil, self.err end
    if self.state ~= "done" then
        return fail(self, "malformed multipart: unexpected end of body")
    end
    return true
end

-- ok, err = multipart.parse(read, content_type, handlers[, opts]): reads
-- the body with read() (a chunk, or nil[, err] at the end) until the closing
-- delimiter and the end of the body, feeding a parser for the boundary of
-- content_type. True when the whole body was well-formed and every handler
-- went on; else nil, err (err from read, a handler, or the parser).
function M.parse(read, content_type, handlers, opts)
    util.check_type(read, "function", 1, "parse")
    util.check_type(handlers, "table", 3, "parse")
    local boundary, err = M.boundary(content_type)
    if not boundary then return nil, err end
    local p = M.new(boundary, handlers, opts)
    while true do
        local chunk, rerr = read()
        if not chunk then
            if rerr then return nil, rerr end
            return p:finish()
        end
        local ok, ferr = p:feed(chunk)
        if not ok then return nil, ferr end
    end
end

-- Collecting into a form ---------------------------------------------------

local function add(t, k, v)
    local old = t[k]
    if old == nil then
        t[k] = v
    elseif type(old) == "table" and old.path == nil then
        old[#old + 1] = v
    else
        t[k] = { old, v }
    end
end

-- The temporary files of a form, removed when the form is garbage-collected
-- (a guard in its metatable) unless multipart.remove ran first.
local function guard(form, files)
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function()
        for _, path in ipairs(files) do remove(path) end
    end
    setmetatable(form, { __files = files, __guard = proxy })
end

-- multipart.remove(form): removes the temporary files of a collected form
-- (those still there; a file you os.rename'd away is yours).
function M.remove(form)
    util.check_type(form, "table", 1, "remove")
    local mt = getmetatable(form)
    local files = mt and mt.__files
    if not files then return end
    for i = #files, 1, -1 do
        remove(files[i])
        files[i] = nil
    end
end

local function open_tmp()
    local ok, path = pcall(os.tmpname)
    if not ok then return nil, "cannot create a temporary file: " .. tostring(path) end
    local f, err = open(path, "wb")
    if not f then
        remove(path)
        return nil, "cannot open a temporary file: " .. err
    end
    return f, path
end

-- handlers, form = multipart.collector([opts]): handlers for parse that
-- fill form: a field's value as a string (at most opts.max_field bytes,
-- default M.MAX_FIELD, else "field too large"), a file part (one with a
-- filename) as { filename, content_type, headers, path, size } with its
-- content in a temporary file at path. A repeated name gets a list.
function M.collector(opts)
    util.check_type(opts, "table", 1, "collector", true)
    local max_field = (opts and opts.max_field) or M.MAX_FIELD
    local form, files = {}, {}
    guard(form, files)
    local handlers = {}
    function handlers.part(part)
        if part.filename ~= nil then
            local f, path = open_tmp()
            if not f then return nil, path end
            files[#files + 1] = path
            part.file, part.path, part.size = f, path, 0
        else
            part.chunks, part.size = {}, 0
        end
    end
    function handlers.data(part, chunk)
        part.size = part.size + #chunk
        if part.file then
            local ok, err = part.file:write(chunk)
            if not ok then return nil, "cannot write a temporary file: " .. tostring(err) end
        elseif part.size > max_field then
            return nil, "field too large"
        else
            part.chunks[#part.chunks + 1] = chunk
        end
    end
    function handlers.part_end(part)
        if part.file then
            local ok, err = part.file:close()
            part.file = nil
            if not ok then return nil, "cannot write a temporary file: " .. tostring(err) end
            if part.name then
                add(form, part.name, { filename = part.filename, content_type = part.content_type,
                                       headers = part.headers, path = part.path, size = part.size })
            end
        elseif part.name then
            add(form, part.name, concat(part.chunks))
        end
    end
    -- Closes a file left open by a failed parse.
    function handlers.abort(part)
        if part and part.file then
            part.file:close()
            part.file = nil
        end
    end
    return handlers, form
end

-- form, err = multipart.collect(read, content_type[, opts]): parse with a
-- collector. On failure its temporary files are removed and nil, err
-- returned. opts: those of collector and new.
function M.collect(read, content_type, opts)
    local handlers, form = M.collector(opts)
    local current
    local part_cb = handlers.part
    handlers.part = function(part)
        current = part
        return part_cb(part)
    end
    local ok, err = M.parse(read, content_type, handlers, opts)
    if not ok then
        handlers.abort(current)
        M.remove(form)
        return nil, err
    end
    return form
end

return M
