-- bench/peers/wsapi/app.lua: the WSAPI peer, run as `luajit app.lua` under
-- spawn-fcgi (bench/lib/servers.sh uses -F 64): wsapi.fastcgi (lfcgi, on
-- libfcgi) accepts one request at a time per process. Same routes as the
-- other peers: /hello, /json (lua-cjson), /upload (body length), /sleep?ms=N.
local fastcgi = require "wsapi.fastcgi"
local cjson = require "cjson"
local ffi = require "ffi"

ffi.cdef "int poll(void *fds, unsigned long nfds, int timeout);"

local items = {}
for i = 1, 16 do
    items[i] = { id = i, name = ("item-%02d"):format(i), price = i * 1.25, qty = i * 3,
                 in_stock = i % 2 == 0 }
end
local doc = { id = 12345, name = "afcgi benchmark", active = true, score = 0.5,
              tags = { "alpha", "beta", "gamma", "delta" }, items = items }

local function answer(ctype, body)
    return 200, { ["Content-Type"] = ctype, ["Content-Length"] = tostring(#body) },
        coroutine.wrap(function() coroutine.yield(body) end)
end

local routes = {
    ["/hello"] = function() return answer("text/plain", "Hello, world!\n") end,
    ["/json"] = function() return answer("application/json", cjson.encode(doc) .. "\n") end,
    ["/upload"] = function(env)
        local n, len = 0, tonumber(env.CONTENT_LENGTH) or 0
        while n < len do
            local chunk = env.input:read(math.min(65536, len - n))
            if not chunk or #chunk == 0 then break end
            n = n + #chunk
        end
        return answer("text/plain", "length " .. n .. "\n")
    end,
    ["/sleep"] = function(env)
        local ms = tonumber((env.QUERY_STRING or ""):match("ms=(%d+)")) or 10000
        ffi.C.poll(nil, 0, ms)
        return answer("text/plain", "slept " .. ms .. "\n")
    end,
}

fastcgi.run(function(env)
    local route = routes[env.DOCUMENT_URI] or routes["/hello"]
    return route(env)
end)
