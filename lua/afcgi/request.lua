-- afcgi.request: the Lua half of req and res, loaded once per code
-- generation before the app. C provides the primitives in the method tables
-- of afcgi.core; what is not on a hot path is written here.
local core = require "afcgi.core"

local rawget = rawget

local req = core.req_methods

local read_body = req.read_body

-- body, err = req:read_body(): the whole body, once; later calls and
-- req.body give the same string.
function req:read_body()
    local body = rawget(self, "body")
    if body then
        return body
    end
    local err
    body, err = read_body(self)
    if body then
        self.body = body
    end
    return body, err
end

return core
