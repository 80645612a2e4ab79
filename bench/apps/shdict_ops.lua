-- bench/apps/shdict_ops.lua: the loop bench/shdict times, the same code in
-- afcgi (bench/apps/shdict.lua) and in nginx + lua-nginx-module
-- (bench/peers/nginx/shdict.conf.in). run(dict, op, n) does n operations:
--   get   get of one of 1,000 keys in turn (set beforehand by "fill")
--   set   set of one of 1,000 keys in turn to a 32-byte string
--   incr  incr of one counter (every worker on the same key)
--   fill  sets the 1,000 keys once
local keys = {}
for i = 1, 1000 do keys[i] = "key:" .. i end
local VALUE = ("v"):rep(32)

return function(d, op, n)
    if op == "get" then
        for i = 1, n do d:get(keys[i % 1000 + 1]) end
    elseif op == "set" then
        for i = 1, n do d:set(keys[i % 1000 + 1], VALUE) end
    elseif op == "incr" then
        for _ = 1, n do d:incr("counter", 1, 0) end
    elseif op == "fill" then
        for i = 1, 1000 do d:set(keys[i], VALUE) end
    else
        error("unknown op " .. tostring(op))
    end
end
