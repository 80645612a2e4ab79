-- bench/apps/json.lua: the 1 KB JSON workload for afcgi. The document is
-- built once; each request encodes it with lua-cjson (as every peer encodes
-- the same document with its own encoder per request).
local cjson = require "cjson"

local items = {}
for i = 1, 16 do
    items[i] = { id = i, name = ("item-%02d"):format(i), price = i * 1.25, qty = i * 3,
                 in_stock = i % 2 == 0 }
end
local doc = { id = 12345, name = "afcgi benchmark", active = true, score = 0.5,
              tags = { "alpha", "beta", "gamma", "delta" }, items = items }

return function(req, res) -- luacheck: ignore req
    res:header("Content-Type", "application/json")
    res:write(cjson.encode(doc), "\n")
end
