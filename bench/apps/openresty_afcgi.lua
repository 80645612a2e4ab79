-- bench/apps/openresty_afcgi.lua: bench/apps/openresty.lua's routes as an
-- afcgi app (OpenResty's API from afcgi.ngx).
require "afcgi.ngx"
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local routes = assert(loadfile(dir .. "openresty.lua"))()

return function(req, res)
    local route = routes[req.path]
    if not route then return res:exit(404) end
    return route()
end
