-- A body read with req:read while it arrives: in records of many sizes and
-- paddings, each cut across writes (inside its header, its content and its
-- padding), or sent a byte at a time. The server hands a parked reader the
-- bytes of a record as they arrive (an incomplete STDIN record gives what
-- it has at once), and keeps the rest for the next reads; whatever the cuts
-- and the reader's max, the pieces are at most max and add up to the body
-- byte for byte. A request aborted in the same write as a piece handed to
-- its parked reader ends without that reader running again. The app is
-- spec/fixtures/pieces.lua.
local helpers = require "helpers"
local fc = require "fcgi_client"

-- n bytes of a linear congruential sequence from seed: no period a
-- misplaced piece could hide in.
local function noise(n, seed)
    local out, x = {}, seed
    for i = 1, n do
        x = (x * 1103515245 + 12345) % 2147483648
        out[i] = string.char(math.floor(x / 65536) % 256)
    end
    return table.concat(out)
end

local SIZES = { 1, 7, 100, 65535, 3000, 40000, 65535, 12, 65535, 999, 20000 }

-- The STDIN records of request id for the parts of body cut by SIZES (the
-- last size repeats), each with its own padding, as a list of
-- { header .. content .. padding, clen, plen }.
local function records(id, body)
    local out, at, i = {}, 1, 1
    while at <= #body do
        local n = math.min(SIZES[math.min(i, #SIZES)], #body - at + 1)
        local pad = (i * 37) % 256
        out[#out + 1] = { fc.record(fc.STDIN, id, body:sub(at, at + n - 1), { padding = pad }), n, pad }
        at, i = at + n, i + 1
    end
    return out
end

-- Sends request id (POST uri, body) on c, each record in three or four
-- writes: inside its header, inside its content, inside its padding.
local function send_cut(c, id, uri, body)
    c:begin(id)
    c:params(id, fc.cgi_params("POST", uri, nil, #body))
    for _, r in ipairs(records(id, body)) do
        local rec, clen, plen = r[1], r[2], r[3]
        local cuts = { 3, 8 + math.floor(clen / 3) }
        if plen > 1 then cuts[#cuts + 1] = 8 + clen + math.floor(plen / 2) end
        local from = 1
        for _, cut in ipairs(cuts) do
            if cut >= from then
                c:send_raw(rec:sub(from, cut))
                from = cut + 1
            end
        end
        c:send_raw(rec:sub(from))
    end
    c:stdin(id, "")
end

-- The answer of pieces.lua: its piece count, largest piece and body.
local function answer(r)
    assert.equal(200, r.status, r.body)
    local n, largest, rest = r.body:match("^pieces (%d+) largest (%d+)\n(.*)$")
    assert.is_not_nil(n, r.body:sub(1, 80))
    return tonumber(n), tonumber(largest), rest
end

local function check(r, body, max)
    local n, largest, got = answer(r)
    assert.equal(#body, #got)
    assert.is_true(got == body, "the body read differs from the body sent")
    assert.is_true(largest <= max, ("a piece of %d bytes for max %d"):format(largest, max))
    assert.is_true(n >= math.ceil(#body / max), ("%d pieces for %d bytes"):format(n, #body))
end

local function start()
    return helpers.start_server("pieces", { args = { "--shared-dict", "pieces:1m", "--max-body", "2m" } })
end

describe("req:read while the body arrives", function()
    after_each(helpers.cleanup)

    it("gives pieces of at most max that add up to the body, however its records are cut", function()
        local srv = start()
        local c = helpers.connect(srv, nil, { timeout = 30 })
        local body = noise(400000, 1)
        local id = 0
        for _, max in ipairs({ 65536, 1000, 65535, 7 }) do
            for _, thread in ipairs({ "", "&thread=1" }) do
                id = id + 1
                local b = max == 7 and body:sub(1, 30000) or body
                send_cut(c, id, "/read?max=" .. max .. thread, b)
                check(c:read_response(id, 30), b, max)
            end
        end
    end)

    it("takes a record sent a byte at a time", function()
        local srv = start()
        local c = helpers.connect(srv, nil, { timeout = 30 })
        local body = noise(300, 2)
        for id, max in ipairs({ 65536, 10 }) do
            c:begin(id)
            c:params(id, fc.cgi_params("POST", "/read?max=" .. max, nil, #body + 5))
            c:send_bytewise(fc.record(fc.STDIN, id, body, { padding = 9 }))
            c:stdin(id, "tail!")
            c:stdin(id, "")
            check(c:read_response(id, 30), body .. "tail!", max)
        end
    end)

    it("drops the piece of a reader whose request is aborted before it runs again", function()
        local srv = start()
        local c = helpers.connect(srv, nil, { timeout = 30 })
        for id, thread in ipairs({ "", "&thread=1" }) do
            local tag = "abort" .. id
            c:begin(id)
            c:params(id, fc.cgi_params("POST", "/read?tag=" .. tag .. thread, nil, 100000))
            -- the handler flushes "started" and parks in req:read: the piece
            -- and the abort come in one write, so in one read of the server's
            helpers.wait_until(function()
                return c:read_matching(function(r) return r.id == id and r.type == fc.STDOUT end, 5,
                                       "request " .. id .. " started")
            end, 10, "request " .. id .. " started")
            c:send_raw(fc.record(fc.STDIN, id, noise(5000, id)) .. fc.record(fc.ABORT_REQUEST, id, ""))
            local r = c:read_response(id, 10)
            assert.equal(fc.REQUEST_COMPLETE, r.protocol_status)
            local seen
            helpers.wait_until(function()
                seen = c:request(10 + id, "/count?tag=" .. tag).body
                return seen:find("aborted 1", 1, true) ~= nil
            end, 10, "the on_abort of request " .. id)
            assert.equal("pieces 0 aborted 1", seen)
        end
        -- the connection and the server go on
        local body = noise(200000, 3)
        send_cut(c, 20, "/read", body)
        check(c:read_response(20, 30), body, 65536)
    end)
end)
