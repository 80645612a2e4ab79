-- afcgi.multipart: the streaming multipart/form-data parser, fed in pieces
-- of every size, on well-formed and malformed bodies.
package.path = "lua/?.lua;" .. package.path
local multipart = require "afcgi.multipart"

local B = "----afcgiBoundary7MA4YWxk"
local CT = "multipart/form-data; boundary=" .. B

-- A body from a list of parts { headers = {"Name: value", ...}, body = "" }.
local function body_of(parts, opts)
    opts = opts or {}
    local out = { opts.preamble or "" }
    for _, p in ipairs(parts) do
        out[#out + 1] = "--" .. B .. "\r\n" .. table.concat(p.headers, "\r\n")
            .. "\r\n\r\n" .. p.body .. "\r\n"
    end
    out[#out + 1] = "--" .. B .. "--" .. (opts.epilogue or "\r\n")
    return table.concat(out)
end

local function field(name, value)
    return { headers = { ('Content-Disposition: form-data; name="%s"'):format(name) }, body = value }
end

local function file(name, filename, ctype, content)
    return { headers = { ('Content-Disposition: form-data; name="%s"; filename="%s"'):format(name, filename),
                         "Content-Type: " .. ctype },
             body = content }
end

-- Handlers that record every event; data pieces are joined per part.
local function recorder()
    local events, parts = {}, {}
    local h = {}
    function h.part(p)
        events[#events + 1] = "part " .. tostring(p.name)
        p.content = {}
        parts[#parts + 1] = p
    end
    function h.data(p, chunk)
        assert.is_true(#chunk > 0, "empty data chunk")
        p.content[#p.content + 1] = chunk
    end
    function h.part_end(p)
        events[#events + 1] = "end " .. tostring(p.name)
        p.content = table.concat(p.content)
    end
    return h, events, parts
end

-- A reader giving s in pieces of the sizes in sizes (cycled).
local function reader(s, sizes)
    local pos, i = 1, 0
    return function()
        if pos > #s then return nil end
        i = i % #sizes + 1
        local piece = s:sub(pos, pos + sizes[i] - 1)
        pos = pos + #piece
        return piece
    end
end

local function parse(s, sizes, opts)
    local h, events, parts = recorder()
    local ok, err = multipart.parse(reader(s, sizes or { #s + 1 }), CT, h, opts)
    return ok, err, events, parts
end

describe("multipart.boundary", function()
    it("takes the boundary parameter, quoted or not, in any case", function()
        assert.equal("abc", multipart.boundary("multipart/form-data; boundary=abc"))
        assert.equal("a b:c", multipart.boundary('Multipart/Form-Data; charset=utf-8; BOUNDARY="a b:c"'))
        assert.equal("x", multipart.boundary("multipart/form-data;boundary=x; other=1"))
    end)

    it("refuses other types and missing or invalid boundaries with nil, err", function()
        assert.same({ nil, "not multipart/form-data" }, { multipart.boundary("text/plain; boundary=x") })
        assert.same({ nil, "not multipart/form-data" }, { multipart.boundary(nil) })
        assert.same({ nil, "no boundary" }, { multipart.boundary("multipart/form-data") })
        assert.same({ nil, "no boundary" }, { multipart.boundary('multipart/form-data; boundary=""') })
        assert.same({ nil, "no boundary" }, { multipart.boundary("multipart/form-data; boundary=" .. ("x"):rep(71)) })
        assert.same({ nil, "no boundary" }, { multipart.boundary('multipart/form-data; boundary="a\r\nb"') })
    end)
end)

describe("multipart.parse", function()
    -- Content that looks like delimiters without being one: a prefix of the
    -- boundary after CRLF, the whole boundary not after CRLF.
    local content = "line one\r\n--" .. B:sub(1, 10) .. "\r\n-\r\r\nx--" .. B .. "--\r\n\0\255"
    local body = body_of({ field("title", "Hello, wörld"),
                           file("upload", "a b.bin", "application/octet-stream", content),
                           field("empty", "") },
                         { preamble = "ignored preamble\r\n", epilogue = "\r\nignored epilogue" })

    it("hands each part's headers, content and end to the handlers, in order", function()
        local ok, err, events, parts = parse(body)
        assert.is_true(ok, err)
        assert.same({ "part title", "end title", "part upload", "end upload", "part empty", "end empty" }, events)
        assert.equal("Hello, wörld", parts[1].content)
        assert.is_nil(parts[1].filename)
        assert.equal("a b.bin", parts[2].filename)
        assert.equal("application/octet-stream", parts[2].content_type)
        assert.equal(content, parts[2].content)
        assert.equal("form-data; name=\"upload\"; filename=\"a b.bin\"", parts[2].headers["content-disposition"])
        assert.equal("", parts[3].content)
    end)

    it("gives the same result fed one byte at a time and in uneven pieces", function()
        local _, _, events1, parts1 = parse(body)
        for _, sizes in ipairs({ { 1 }, { 2, 3 }, { 7, 1, 64, 5 }, { #B + 3 }, { #B + 4, 1 } }) do
            local ok, err, events, parts = parse(body, sizes)
            assert.is_true(ok, err)
            assert.same(events1, events)
            for i = 1, #parts1 do assert.equal(parts1[i].content, parts[i].content) end
        end
    end)

    it("accepts a part without headers, transport padding and a delimiter at the very start", function()
        local s = "--" .. B .. "  \t\r\n\r\nno headers\r\n--" .. B .. "--"
        local ok, err, events, parts = parse(s, { 1 })
        assert.is_true(ok, err)
        assert.same({ "part nil", "end nil" }, events)
        assert.equal("no headers", parts[1].content)
        assert.same({}, parts[1].headers)
    end)

    it("reads filename*= (RFC 8187) before filename= and folded header lines", function()
        local s = body_of({ { headers = { "Content-Disposition: form-data; name=f;",
                                          "  filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt" },
                              body = "x" } })
        local ok, err, _, parts = parse(s)
        assert.is_true(ok, err)
        assert.equal("f", parts[1].name)
        assert.equal("€ rates.txt", parts[1].filename)
    end)

    it("keeps at most a delimiter's length buffered while streaming a part", function()
        local h = { data = function() end }
        local p = multipart.new(B, h)
        assert.is_true(p:feed("--" .. B .. "\r\nContent-Disposition: form-data; name=big\r\n\r\n"))
        local chunk = ("0123456789abcdef"):rep(4096)
        for _ = 1, 64 do
            assert.is_true(p:feed(chunk))
            assert.is_true(#p.buf < #B + 4, "parser buffered " .. #p.buf .. " bytes")
        end
        assert.is_true(p:feed("\r\n--" .. B .. "--\r\n"))
        assert.is_true(p:finish())
    end)

    local malformed = {
        { "an empty body", "", "malformed multipart: unexpected end of body" },
        { "a body without delimiter", "just text", "malformed multipart: unexpected end of body" },
        { "a missing closing delimiter", "--" .. B .. "\r\n\r\nabc", "malformed multipart: unexpected end of body" },
        { "a cut in the headers", "--" .. B .. "\r\nContent-Disp", "malformed multipart: unexpected end of body" },
        { "garbage after a delimiter", "--" .. B .. "garbage\r\n\r\n\r\n--" .. B .. "--",
          "malformed multipart: bad delimiter line" },
        { "a header line without a colon", "--" .. B .. "\r\nnot a header\r\n\r\nx\r\n--" .. B .. "--",
          "malformed multipart: bad part header" },
        { "an unterminated quoted name", "--" .. B .. '\r\nContent-Disposition: form-data; name="x\r\n\r\n\r\n--'
          .. B .. "--", "malformed multipart: bad content-disposition" },
    }
    for _, case in ipairs(malformed) do
        it("returns nil, err for " .. case[1], function()
            for _, sizes in ipairs({ { #case[2] + 1 }, { 1 } }) do
                local ok, err = parse(case[2], sizes)
                assert.is_nil(ok)
                assert.equal(case[3], err)
            end
        end)
    end

    it("returns nil, err past the header and part limits", function()
        local huge = body_of({ { headers = { "X-Big: " .. ("h"):rep(100) }, body = "" } })
        for _, sizes in ipairs({ { 1 }, { #huge + 1 } }) do
            local ok, err = parse(huge, sizes, { max_header = 64 })
            assert.same({ nil, "part headers too large" }, { ok, err })
        end
        local many = body_of({ field("a", "1"), field("b", "2"), field("c", "3") })
        local ok, err = parse(many, nil, { max_parts = 2 })
        assert.same({ nil, "too many parts" }, { ok, err })
    end)

    it("stops when a handler returns nil, err or false", function()
        local s = body_of({ field("a", "1"), field("b", "2") })
        local seen = 0
        local ok, err = multipart.parse(reader(s, { 3 }), CT, {
            part = function(p)
                seen = seen + 1
                if p.name == "a" then return nil, "refused a" end
            end,
        })
        assert.same({ nil, "refused a", 1 }, { ok, err, seen })
        ok, err = multipart.parse(reader(s, { 3 }), CT, { part_end = function() return false end })
        assert.same({ nil, "stopped" }, { ok, err })
    end)

    it("passes on a read error and refuses a wrong Content-Type", function()
        local n = 0
        local ok, err = multipart.parse(function()
            n = n + 1
            if n == 1 then return "--" .. B .. "\r\n" end
            return nil, "too large"
        end, CT, {})
        assert.same({ nil, "too large" }, { ok, err })
        assert.same({ nil, "not multipart/form-data" },
                    { multipart.parse(reader("x", { 1 }), "application/json", {}) })
    end)

    it("raises at the caller on a missing reader or handlers", function()
        local ok, err = pcall(multipart.parse, nil, CT, {})
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'parse' %(function expected, got nil%)", err)
        ok, err = pcall(function() multipart.parse(function() end, CT) end)
        assert.is_false(ok)
        assert.matches("^spec/unit/multipart_spec%.lua:%d+: bad argument #3 to 'parse'", err)
    end)
end)

describe("multipart.collect", function()
    local function exists(path)
        local f = io.open(path)
        if f then f:close() end
        return f ~= nil
    end

    local function slurp(path)
        local f = assert(io.open(path, "rb"))
        local s = f:read("*a")
        f:close()
        return s
    end

    it("gives fields as strings and files in temporary files, repeated names as lists", function()
        local bin = {}
        for i = 0, 255 do bin[#bin + 1] = string.char(i) end
        bin = table.concat(bin):rep(300)
        local s = body_of({ field("name", "Zoë"), file("doc", "d.bin", "application/octet-stream", bin),
                            field("tag", "a"), field("tag", "b"), file("doc", "e.txt", "text/plain", "") })
        local form, err = multipart.collect(reader(s, { 1000, 3 }), CT)
        assert.is_table(form, err)
        finally(function() multipart.remove(form) end)
        assert.equal("Zoë", form.name)
        assert.same({ "a", "b" }, form.tag)
        assert.equal(2, #form.doc)
        local d, e = form.doc[1], form.doc[2]
        assert.same({ "d.bin", "application/octet-stream", #bin }, { d.filename, d.content_type, d.size })
        assert.equal(bin, slurp(d.path))
        assert.same({ "e.txt", 0, "" }, { e.filename, e.size, slurp(e.path) })
        multipart.remove(form)
        assert.is_false(exists(d.path))
        assert.is_false(exists(e.path))
    end)

    it("removes its temporary files and returns nil, err when the body is malformed", function()
        local s = body_of({ file("f", "a.txt", "text/plain", "complete") })
        local cut = s:sub(1, -#B - 10) .. "partial"            -- the part never closes
        local made = {}
        local real_tmpname = os.tmpname
        os.tmpname = function()                                  -- luacheck: ignore 122
            local p = real_tmpname()
            made[#made + 1] = p
            return p
        end
        finally(function() os.tmpname = real_tmpname end)      -- luacheck: ignore 122
        local form, err = multipart.collect(reader(cut, { 5 }), CT)
        assert.same({ nil, "malformed multipart: unexpected end of body" }, { form, err })
        assert.equal(1, #made)
        assert.is_false(exists(made[1]))
    end)

    it("returns nil, 'field too large' past max_field", function()
        local s = body_of({ field("small", "ok"), field("big", ("x"):rep(100)) })
        assert.same({ nil, "field too large" }, { multipart.collect(reader(s, { 7 }), CT, { max_field = 99 }) })
        assert.is_table(multipart.collect(reader(s, { 7 }), CT, { max_field = 100 }))
    end)

    it("removes the files of a form nobody holds any more when it is collected", function()
        local path
        do
            local form = assert(multipart.collect(reader(body_of({ file("f", "a", "text/plain", "x") }), { 9 }), CT))
            path = form.f.path
            assert.is_true(exists(path))
        end
        collectgarbage()
        collectgarbage()
        assert.is_false(exists(path))
    end)
end)
