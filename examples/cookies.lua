-- examples/cookies.lua: reading cookies, setting several at once, deleting
-- one, and storing text a cookie cannot hold as it is.
--
--     ./afcgi --listen 127.0.0.1:9000 examples/cookies.lua
--
--   GET /                 counts your visits in a cookie (a bad value resets it)
--   GET /name?value=Zoë   remembers a name (escaped: cookies hold no spaces,
--                         quotes, semicolons or non-ASCII as they are)
--   GET /login            sets a session cookie and redirects to /
--   GET /logout           deletes both and redirects to /
local query = require "afcgi.query"

local YEAR = 365 * 24 * 3600

local function home(req, res)
    -- A cookie is whatever the client sent: check it before trusting it.
    local visits = tonumber(req:cookie("visits") or "0")
    if not visits or visits < 0 or visits % 1 ~= 0 then
        visits = 0
    end
    visits = visits + 1
    res:cookie("visits", visits, { max_age = YEAR, httponly = true, samesite = "Lax" })
    local name = req:cookie("name")
    res:header("Content-Type", "text/plain; charset=utf-8")
    res:write("Visit number ", visits, ".\n")
    res:write("Name: ", name and query.unescape(name) or "(none; try /name?value=Zoë)", "\n")
    res:write("Session: ", req:cookie("session") or "(none; try /login)", "\n")
end

local function set_name(req, res)
    local value = req:args().value
    if type(value) ~= "string" or value == "" or #value > 100 then
        return res:error(400, "give ?value= (1 to 100 bytes)")
    end
    -- res:cookie raises on characters a cookie cannot hold (a bug, not a
    -- bad request), so escape user text first and unescape it when read.
    res:cookie("name", query.escape(value), { max_age = YEAR, samesite = "Lax" })
    res:redirect("/")
end

-- 16 random bytes as hex, or nil, err.
local function new_token()
    local f, err = io.open("/dev/urandom", "rb")
    if not f then return nil, err end
    local bytes = f:read(16)
    f:close()
    if not bytes or #bytes ~= 16 then return nil, "short read from /dev/urandom" end
    return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function login(_, res)
    local token, err = new_token()
    if not token then
        return res:error(500, "cannot make a session: " .. err)
    end
    -- Two Set-Cookie headers in one response.
    res:cookie("session", token, { httponly = true, samesite = "Strict" })
    res:cookie("logged_in", "1", { samesite = "Strict" })
    res:redirect("/", 303)
end

local function logout(_, res)
    for _, name in ipairs({ "session", "logged_in", "name" }) do
        res:cookie(name, "", { max_age = 0, expires = 0 })   -- deletes it
    end
    res:redirect("/", 303)
end

local routes = { ["/"] = home, ["/name"] = set_name, ["/login"] = login, ["/logout"] = logout }

return function(req, res)
    local route = routes[req.path]
    if not route then
        return res:error(404)
    end
    if req.method ~= "GET" and req.method ~= "HEAD" then
        res:header("Allow", "GET, HEAD")
        return res:error(405)
    end
    return route(req, res)
end
