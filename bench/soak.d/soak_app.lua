-- bench/soak.d/soak_app.lua: the routes of the soak app. app-v1.lua and
-- app-v2.lua are the two versions bench/soak swaps in before each SIGHUP;
-- both `return require("soak_app").new{...}`, so every reload loads this file
-- afresh in the new code generation's Lua state.
--
--   /hello                 "Hello from soak VERSION"
--   /json                  a small document encoded with lua-cjson
--   /echo      (POST)      reads the whole body, answers its length
--   /sleep?min=MS&max=MS   long-poll: waits a random MIN..MAX ms (on_abort set)
--   /threads               light threads: results, a failing one, a killed one,
--                          one left running when the request ends
--   /error                 raises a deliberate error: odd calls before any
--                          output (500), even ones after a flushed partial body
--   /big?kb=N              N KiB in 64 KiB writes, each flushed
--   /version               VERSION, requests served, aborts seen, timer ticks
--                          and the Lua heap (KiB) of this code generation
--
-- Every response carries X-Soak-Version: VERSION and ends with "soak VERSION".
local afcgi = require "afcgi"
local cjson = require "cjson"

local M = {}

local PATTERN = ("0123456789abcdef"):rep(4)      -- 64 bytes
local CHUNK = PATTERN:rep(1024)                  -- 64 KiB

local function qnum(req, name, default)
    return tonumber(("&" .. req.query):match("&" .. name .. "=(%d+)")) or default
end

function M.new(opts)
    local version = assert(opts.version, "version")
    local tag = "soak " .. version
    local json_items = opts.json_items or 8
    local served, aborted, errors, ticks = 0, 0, 0, 0
    -- A periodic timer started at load time: it must stop, and let this code
    -- generation be freed, once a reload has replaced it.
    afcgi.every(0.5, function() ticks = ticks + 1 end)

    local routes = {}

    function routes.hello(_, res)
        res:header("Content-Type", "text/plain")
        res:write("Hello from ", tag, "\n")
    end

    function routes.json(req, res)
        local items = {}
        for i = 1, json_items do
            items[i] = { id = i, name = "item" .. i, price = i * 1.25, tags = { "a", "b" } }
        end
        res:header("Content-Type", "application/json")
        res:write(cjson.encode({
            version = version,
            path = req.path,
            query = req.query,
            served = served,
            items = items,
            ok = true,
        }), "\n", tag, "\n")
    end

    function routes.echo(req, res)
        local body, err = req:read_body()
        if not body then
            return res:exit(err == "too large" and 413 or 400)
        end
        res:header("Content-Type", "text/plain")
        res:write("echo ", #body, " ", body:sub(1, 16), "\n", tag, "\n")
    end

    function routes.sleep(req, res)
        local lo = qnum(req, "min", 100)
        local hi = math.max(lo, qnum(req, "max", 2000))
        local ms = math.random(lo, hi)
        req:on_abort(function() aborted = aborted + 1 end)
        afcgi.sleep(ms / 1000)
        res:header("Content-Type", "text/plain")
        res:write("slept ", ms, "\n", tag, "\n")
    end

    function routes.threads(_, res)
        local sum = afcgi.spawn(function(n)
            afcgi.sleep(0.002)
            local s = 0
            for i = 1, n do s = s + i end
            return s
        end, 1000)
        local enc = afcgi.spawn(function()
            afcgi.sleep(0.001)
            return cjson.encode({ version = version, t = afcgi.now() })
        end)
        local bad = afcgi.spawn(function()
            afcgi.sleep(0.001)
            error("soak: deliberate light thread error")
        end)
        local sleeper = afcgi.spawn(function() afcgi.sleep(60) end)
        afcgi.spawn(function() afcgi.sleep(60) end)      -- ends with the request
        local ok3, err = afcgi.wait(bad)   -- waited for before it fails: not logged
        local ok1, s = afcgi.wait(sum)
        local ok2, doc = afcgi.wait(enc)
        local killed = afcgi.kill(sleeper)
        if not (ok1 and ok2 and not ok3 and killed) then
            return res:exit(500, "threads: " .. tostring(err) .. "\n")
        end
        res:header("Content-Type", "text/plain")
        res:write("threads ", s, " ", #doc, " ",
                  tostring(err):match("deliberate light thread error") and "caught" or "?",
                  "\n", tag, "\n")
    end

    function routes.error(_, res)
        errors = errors + 1
        if errors % 2 == 0 then
            res:header("Content-Type", "text/plain")
            res:write("partial ", tag, "\n")
            res:flush()
            error("soak: deliberate handler error after headers")
        end
        error("soak: deliberate handler error before headers")
    end

    function routes.big(req, res)
        local kb = qnum(req, "kb", 1024)
        res:header("Content-Type", "application/octet-stream")
        for _ = 1, math.floor(kb / 64) do
            res:write(CHUNK)
            local ok = res:flush()
            if not ok then return end                     -- connection gone
        end
        res:write("\n", tag, "\n")
    end

    function routes.version(_, res)
        res:header("Content-Type", "text/plain")
        res:write(version, " served ", served, " aborted ", aborted, " ticks ", ticks,
                  " lua_kb ", math.floor(collectgarbage("count")), "\n", tag, "\n")
    end

    return function(req, res)
        local route = routes[req.path:match("^/(%w+)$") or ""]
        if not route then return res:exit(404) end
        served = served + 1
        res:header("X-Soak-Version", version)
        return route(req, res)
    end
end

return M
