-- afcgi.cookie: the Cookie header in, Set-Cookie values out.
package.path = "lua/?.lua;" .. package.path
local cookie = require "afcgi.cookie"

-- Asserts fn raises a message that blames this file (error(msg, 2) in the
-- module) and matches pattern. luassert's error_matches strips positions.
local function raises_here(fn, pattern)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    assert.matches("^spec/unit/cookie_spec%.lua:%d+: " .. pattern, err)
end

describe("cookie.parse", function()
    it("maps names to values, trimming blanks", function()
        assert.same({ a = "1", b = "two", c = "" }, cookie.parse("a=1;  b = two ;c="))
    end)

    it("keeps the first value of a repeated name", function()
        assert.same({ sid = "specific" }, cookie.parse("sid=specific; sid=general"))
    end)

    it("removes one pair of double quotes and keeps '=' inside values", function()
        assert.same({ q = "quoted", b64 = "YQ==", half = '"x' }, cookie.parse('q="quoted"; b64=YQ==; half="x'))
    end)

    it("skips pieces without '=' or a name, and gives {} for no header", function()
        assert.same({ ok = "1" }, cookie.parse("junk; =nameless; ok=1;;"))
        assert.same({}, cookie.parse(""))
        assert.same({}, cookie.parse(nil))
    end)

    it("does not decode values", function()
        assert.same({ v = "a%20b+c" }, cookie.parse("v=a%20b+c"))
    end)
end)

describe("cookie.build", function()
    it("gives name=value with Path=/ by default", function()
        assert.equal("sid=abc123; Path=/", cookie.build("sid", "abc123"))
        assert.equal("n=42; Path=/", cookie.build("n", 42))
        assert.equal("empty=; Path=/", cookie.build("empty", ""))
    end)

    it("adds every attribute in a fixed order", function()
        assert.equal("sid=x; Path=/app; Domain=example.com; Max-Age=3600; "
                     .. "Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure; HttpOnly; SameSite=Strict",
                     cookie.build("sid", "x", { path = "/app", domain = "example.com", max_age = 3600,
                                                expires = 784111777, secure = true, httponly = true,
                                                samesite = "strict" }))
    end)

    it("takes expires as seconds since the epoch or as a date string", function()
        assert.equal("gone=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                     cookie.build("gone", "", { max_age = 0, expires = 0 }))
        assert.equal("a=1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
                     cookie.build("a", "1", { expires = "Wed, 21 Oct 2037 07:28:00 GMT" }))
        assert.equal("a=1; Path=/; Expires=Sat, 01 Jan 2000 00:00:00 GMT",
                     cookie.build("a", "1", { expires = 946684800.75 }))
    end)

    it("accepts SameSite=None only with Secure", function()
        assert.equal("a=1; Path=/; Secure; SameSite=None",
                     cookie.build("a", "1", { samesite = "None", secure = true }))
        assert.error_matches(function() cookie.build("a", "1", { samesite = "None" }) end,
                             "needs secure")
        assert.error_matches(function() cookie.build("a", "1", { samesite = "sometimes" }) end,
                             "samesite must be")
    end)

    it("raises at the caller on an invalid name", function()
        for _, name in ipairs({ "", "a b", "a;b", "a=b", "é", "a\n" }) do
            raises_here(function() cookie.build(name, "v") end, "invalid cookie name")
        end
        assert.error_matches(function() cookie.build(nil, "v") end, "invalid cookie name %(nil%)")
    end)

    it("raises on a value with characters a cookie cannot hold", function()
        for _, value in ipairs({ "a b", "a;b", 'a"b', "a,b", "a\\b", "a\r\nb", "\0", "é" }) do
            assert.error_matches(function() cookie.build("n", value) end,
                                 "invalid cookie value for n", nil, value)
        end
        assert.error_matches(function() cookie.build("n", {}) end, "invalid cookie value")
    end)

    it("raises on bad or unknown options", function()
        assert.error_matches(function() cookie.build("a", "1", { path = "/x; Secure" }) end,
                             "path must be")
        assert.error_matches(function() cookie.build("a", "1", { domain = "" }) end, "domain must be")
        assert.error_matches(function() cookie.build("a", "1", { max_age = 1.5 }) end, "max_age must be")
        assert.error_matches(function() cookie.build("a", "1", { expires = "x\r\nSet-Cookie: y" }) end,
                             "expires must be")
        assert.error_matches(function() cookie.build("a", "1", { expires = -1 }) end, "expires must be")
        assert.error_matches(function() cookie.build("a", "1", { http_only = true }) end,
                             "unknown option 'http_only'")
        assert.error_matches(function() cookie.build("a", "1", "secure") end, "options must be a table")
    end)
end)

describe("cookie.format", function()
    it("returns nil, err where build raises", function()
        assert.equal("a=1; Path=/", cookie.format("a", "1"))
        local s, err = cookie.format("a b", "1")
        assert.is_nil(s)
        assert.equal('invalid cookie name "a b"', err)
    end)
end)
