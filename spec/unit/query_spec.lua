-- afcgi.query: decoding and encoding query strings and urlencoded forms.
package.path = "lua/?.lua;" .. package.path
local query = require "afcgi.query"

-- Asserts fn raises a message that blames this file (error(msg, 2) in the
-- module) and matches pattern. luassert's error_matches strips positions.
local function raises_here(fn, pattern)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    assert.matches("^spec/unit/query_spec%.lua:%d+: " .. pattern, err)
end

describe("query.unescape", function()
    it("turns + into a space and %XX into bytes, in either case of hex", function()
        assert.equal("a b", query.unescape("a+b"))
        assert.equal("A\0\255j", query.unescape("%41%00%ff%6a"))
        assert.equal("€", query.unescape("%E2%82%AC"))
    end)

    it("leaves malformed escapes as they are", function()
        assert.equal("%zz %4 % 100%", query.unescape("%zz+%4+%+100%"))
        assert.equal("%%41", query.unescape("%%2541"))
    end)
end)

describe("query.decode", function()
    it("maps names to values", function()
        assert.same({ a = "1", b = "two words", ["c d"] = "x=y" },
                    query.decode("a=1&b=two+words&c%20d=x=y"))
    end)

    it("gives a repeated name the list of its values in order", function()
        assert.same({ a = { "1", "2", "3" }, b = "x" }, query.decode("a=1&b=x&a=2&a=3"))
    end)

    it("gives true to a name without '=' and \"\" to 'name='", function()
        assert.same({ flag = true, empty = "" }, query.decode("flag&empty="))
        assert.same({ a = { true, "1" } }, query.decode("a&a=1"))
    end)

    it("skips empty pieces and empty names", function()
        assert.same({ a = "1", b = "2" }, query.decode("&&a=1&&=orphan&b=2&"))
        assert.same({}, query.decode(""))
    end)

    it("keeps binary and UTF-8 values byte for byte", function()
        local t = query.decode("bin=%00%01%FE%FF&text=%C3%A9t%C3%A9&raw=\226\130\172")
        assert.equal("\0\1\254\255", t.bin)
        assert.equal("été", t.text)
        assert.equal("€", t.raw)
    end)

    it("stops after max pairs and says 'truncated'", function()
        local t, err = query.decode("a=1&b=2&c=3", 2)
        assert.same({ a = "1", b = "2" }, t)
        assert.equal("truncated", err)
        local parts = {}
        for i = 1, query.MAX_ARGS + 1 do parts[i] = "k" .. i .. "=v" end
        local big, err2 = query.decode(table.concat(parts, "&"))
        assert.equal("truncated", err2)
        assert.equal("v", big["k" .. query.MAX_ARGS])
        assert.is_nil(big["k" .. (query.MAX_ARGS + 1)])
        assert.is_nil(select(2, query.decode("a=1&b=2", 2)))
    end)

    it("raises at the caller on a non-string", function()
        raises_here(function() query.decode(nil) end,
                    "bad argument #1 to 'decode' %(string expected, got nil%)")
    end)
end)

describe("query.escape", function()
    it("keeps unreserved characters and escapes the rest as %XX", function()
        assert.equal("AZaz09-._~", query.escape("AZaz09-._~"))
        assert.equal("a%20b%2Bc%26d%3De%2F%3F%25%00%E2%82%AC", query.escape("a b+c&d=e/?%\0€"))
        assert.equal("42", query.escape(42))
    end)

    it("round-trips every byte through unescape", function()
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        local s = table.concat(all)
        assert.equal(s, query.unescape(query.escape(s)))
    end)
end)

describe("query.encode", function()
    it("encodes names in sorted order, lists as repeated names, true as a bare name", function()
        assert.equal("a=1&b=x%20y&flag&list=1&list=2",
                     query.encode({ b = "x y", a = 1, flag = true, off = false, list = { "1", 2 } }))
    end)

    it("round-trips through decode", function()
        local t = { name = "Zoë & co", tags = { "a", "b=c" }, empty = "", ["odd key"] = "%" }
        assert.same(t, query.decode(query.encode(t)))
    end)

    it("raises at the caller on values it cannot encode", function()
        raises_here(function() query.encode({ f = print }) end,
                    "bad argument #1 to 'encode' %(bad value for 'f'")
        assert.error_matches(function() query.encode({ t = { { "nested" } } }) end,
                             "bad value for 't' %(table%)")
        assert.error_matches(function() query.encode("a=1") end, "table expected, got string")
    end)
end)
