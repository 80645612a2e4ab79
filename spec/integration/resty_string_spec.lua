-- OpenResty's libraries find their names and their C symbols: Debian's
-- lua-nginx-string (lua-resty-string, installed as nginx.*) required as
-- resty.sha1, resty.md5, resty.sha256, resty.aes, resty.random and
-- resty.string, unmodified, in a handler (spec/fixtures/resty_string.lua),
-- giving what the same library gives inside Debian's nginx lua module.
local helpers = require "helpers"
local ngx_eval = require "ngx_eval"

describe("lua-resty-string by its resty.* names", function()
    local c
    before_each(function()
        c = helpers.connect(helpers.start_server("resty_string"))
    end)
    after_each(helpers.cleanup)

    local function get(id, path)
        local r = c:request(id, path)
        assert.equal(200, r.status, r.body)
        return r.body
    end

    it("digests with resty.md5/sha1/sha256/sha512 and resty.string.to_hex, across a yield", function()
        assert.equal(table.concat({
            "5d41402abc4b2a76b9719d911017c592",
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7"
                .. "2323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043",
        }, "\n"), get(1, "/digests?s=hello"))
    end)

    it("resty.random, resty.string.atoi, and the name mapping", function()
        assert.equal("16 16 true", get(1, "/random"))
        assert.equal("true\ntrue\nfunction\ntrue\nfalse true\n12345 -1", get(2, "/names"))
    end)

    it("gives the digests and AES ciphertexts Debian's nginx lua module gives", function()
        local pair = ngx_eval.start()
        local ours = get(1, "/digests?s=" .. ("The quick brown fox"):gsub(" ", "+")) .. "\n"
            .. get(2, "/aes?s=attack+at+dawn")
        -- the same library inside nginx, by its Debian names
        local theirs = pair:nginx([[
            local str = require "nginx.string"
            local aes = require "nginx.aes"
            local out = {}
            for _, name in ipairs { "md5", "sha1", "sha256", "sha512" } do
                local h = require("nginx." .. name):new()
                h:update("The quick brown fox")
                out[#out + 1] = str.to_hex(h:final())
            end
            for _, size in ipairs { 128, 192, 256 } do
                for _, mode in ipairs { "cbc", "ecb", "cfb1", "cfb8", "cfb128", "ofb" } do
                    local a = assert(aes:new("secret", "saltsalt", aes.cipher(size, mode), aes.hash.sha256, 3))
                    local enc = a:encrypt("attack at dawn")
                    out[#out + 1] = size .. "-" .. mode .. " " .. str.to_hex(enc) .. " "
                        .. tostring(a:decrypt(enc) == "attack at dawn")
                end
            end
            return table.concat(out, "\n")
        ]])
        assert.equal(theirs, ours)
        assert.equal(4 + 18, select(2, ours:gsub("\n", "")) + 1)
        assert.not_matches("false", ours)
    end)
end)
