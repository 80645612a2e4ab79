-- The body of one GET over FastCGI, on stdout (bench/parked reads /heap):
--   luajit bench/lib/fcgi_body.lua HOST:PORT URI
package.path = "spec/support/?.lua;" .. package.path
local fc = require "fcgi_client"

local c = fc.connect(assert(arg[1], "HOST:PORT"), { timeout = 30 })
local r = c:request(1, assert(arg[2], "URI"))
if r.status ~= 200 then error(("%s: status %s"):format(arg[2], tostring(r.status)), 0) end
io.write(r.body)
c:close()
