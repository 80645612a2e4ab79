-- afcgi.coroutine: coroutine.resume and coroutine.wrap that let a coroutine
-- of the app's wait in afcgi calls (sockets, sleep, semaphores, the body),
-- as OpenResty's do: lua-resty-http's body reader, iterators over a socket
-- and the like run unmodified. Installed in place in the `coroutine` table
-- once per code generation, before the app loads (lua/afcgi/request.lua),
-- so code that keeps a local copy of coroutine.resume gets these.
--
-- An afcgi call that waits inside such a coroutine yields core.WAIT; resume
-- passes it up, coroutine by coroutine, until the task's own coroutine
-- yields to the server; the call's results come back down the same way.
local core = require "afcgi.core"

local raw_create, raw_resume, raw_yield = coroutine.create, coroutine.resume, coroutine.yield
local error, select, setmetatable = error, select, setmetatable
local WAIT = core.WAIT

-- coroutines suspended in an afcgi call: only their waiting resume goes on
local waiting = setmetatable({}, { __mode = "k" })

local pass

-- co's wait ended (its results are the arguments): resume it with them.
local function hand_back(co, ...)
    waiting[co] = nil
    return pass(co, raw_resume(co, ...))
end

-- What raw_resume returned: co waits in an afcgi call (park whoever runs
-- this too, and hand co the results when they come), or co's own yield or end.
function pass(co, ok, first, ...)
    if ok and first == WAIT and select("#", ...) == 0 then
        waiting[co] = true
        return hand_back(co, raw_yield(WAIT))
    end
    return ok, first, ...
end

local function resume(co, ...)
    if waiting[co] then
        return false, "cannot resume a coroutine that waits in an afcgi call"
    end
    return pass(co, raw_resume(co, ...))
end

local function rethrow(ok, ...)
    if not ok then error((...), 0) end
    return ...
end

local function wrap(f)
    local co = raw_create(f)
    return function(...)
        return rethrow(resume(co, ...))
    end
end

coroutine.resume = resume -- the standard table itself, changed in place (see above)
coroutine.wrap = wrap

return { resume = resume, wrap = wrap }
