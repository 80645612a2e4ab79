-- Correctness half of bench/redis: N requests to examples/redis_counter.lua
-- sent at once over one FastCGI connection (all in flight together), every
-- answer read back. Each did one INCR on the same key, so the counts must be
-- exactly 1..N, each once. Prints one line; exits 1 on any mismatch.
--   luajit bench/lib/redis_check.lua HOST:PORT N PATH
package.path = "spec/support/?.lua;" .. package.path
local fc = require "fcgi_client"
local socket = require "socket"

local addr, n, path = arg[1], tonumber(arg[2]), arg[3]
local c = fc.connect(addr, { timeout = 60 })
local t0 = socket.gettime()
c:cork()
for id = 1, n do
    c:begin(id)
    c:params(id, fc.cgi_params("GET", path))
    c:stdin(id, "")
end
c:uncork()
local seen, bad = {}, 0
for id = 1, n do
    local r = c:read_response(id, 60)
    local count = r.status == 200 and tonumber(r.body:match("^" .. path .. " (%d+)\n$"))
    if not count or seen[count] then
        bad = bad + 1
    else
        seen[count] = true
    end
end
local took = socket.gettime() - t0
for i = 1, n do if not seen[i] then bad = bad + 1 end end
print(("correctness: %d requests in flight at once on one connection, %d wrong, "
    .. "counts 1..%d each seen once: %s (%.3f s)"):format(n, bad, n, bad == 0 and "yes" or "NO", took))
os.exit(bad == 0 and 0 or 1)
