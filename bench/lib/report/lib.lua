-- bench/lib/report/lib.lua: what every report of bench/lib/report.lua
-- shares: JSON lines in and out, the tools' outputs read into numbers
-- (afcgi-bench --json, wrk --latency), medians and their formatting.
local cjson = require "cjson"

local M = {}

-- JSON lines -------------------------------------------------------------------

-- v as JSON, object keys sorted (so that a results file diffs well).
function M.encode(v)
    if type(v) ~= "table" then return cjson.encode(v) end
    if next(v) == nil then return "{}" end
    if #v > 0 then
        local parts = {}
        for i = 1, #v do parts[i] = M.encode(v[i]) end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. M.encode(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
end

-- Every record of a JSON-lines file, in order ({} when there is no file).
function M.read_jsonl(path)
    local out = {}
    local f = io.open(path)
    if not f then return out end
    local n = 0
    for line in f:lines() do
        n = n + 1
        if line:find("%S") then
            local ok, r = pcall(cjson.decode, line)
            if not ok then error(("%s:%d: not JSON: %s"):format(path, n, r), 0) end
            out[#out + 1] = r
        end
    end
    f:close()
    return out
end

function M.append_jsonl(path, record)
    local f = assert(io.open(path, "a"))
    f:write(M.encode(record), "\n")
    f:close()
end

-- The records of list whose fields equal those of match (a table).
function M.where(list, match)
    local out = {}
    for _, r in ipairs(list) do
        local ok = true
        for k, v in pairs(match) do
            if r[k] ~= v then ok = false; break end
        end
        if ok then out[#out + 1] = r end
    end
    return out
end

function M.read_file(path)
    local f = io.open(path)
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

-- A JSON document (text), or nil when it is not one.
function M.decode(text)
    local ok, v = pcall(cjson.decode, text or "")
    if ok and type(v) == "table" then return v end
    return nil
end

-- Tools' outputs ---------------------------------------------------------------

-- The error kinds of afcgi-bench's report, in its order.
M.KINDS = { "connect", "read", "protocol", "status", "body", "timeout", "overloaded" }

-- The error kinds that are not 0, as a table (kind -> count).
function M.bench_errors(report)
    local e = {}
    for k, n in pairs(report.errors or {}) do
        if type(n) == "number" and n > 0 then e[k] = n end
    end
    return e
end

-- wrk's latency ("812.00us", "1.23ms", "2.01s", "1.5m") in milliseconds.
function M.wrk_ms(v)
    local n, unit = tostring(v or ""):match("^([%d.]+)(%a*)$")
    n = tonumber(n)
    if not n then return nil end
    if unit == "us" then return n / 1000 end
    if unit == "s" then return n * 1000 end
    if unit == "m" then return n * 60000 end
    return n
end

-- The figures of a `wrk --latency` run: requests, rps, p50_ms, p99_ms,
-- non2xx, socket_errors (kind -> count, the ones that are not 0).
function M.wrk(text)
    text = text or ""
    local w = {
        requests = tonumber(text:match("\n%s*(%d+) requests in ")) or 0,
        rps = tonumber(text:match("\nRequests/sec:%s*([%d.]+)")) or 0,
        p50_ms = M.wrk_ms(text:match("\n%s*50%%%s+(%S+)")),
        p99_ms = M.wrk_ms(text:match("\n%s*99%%%s+(%S+)")),
        non2xx = tonumber(text:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0,
        socket_errors = {},
    }
    local errs = text:match("Socket errors: ([^\n]*)")
    if errs then
        for kind, n in errs:gmatch("(%a+) (%d+)") do
            if tonumber(n) > 0 then w.socket_errors[kind] = tonumber(n) end
        end
    end
    return w
end

-- wrk's socket error kinds, in its order.
M.WRK_KINDS = { "connect", "read", "write", "timeout" }

-- counts (kind -> n) as "read=3,body=2" in the order of kinds (then any
-- other kind, sorted), or nil when there are none.
function M.kinds_text(counts, kinds)
    local parts, seen = {}, {}
    for _, k in ipairs(kinds) do
        if counts[k] then parts[#parts + 1] = k .. "=" .. counts[k]; seen[k] = true end
    end
    local rest = {}
    for k in pairs(counts) do if not seen[k] then rest[#rest + 1] = k end end
    table.sort(rest)
    for _, k in ipairs(rest) do parts[#parts + 1] = k .. "=" .. counts[k] end
    return #parts > 0 and table.concat(parts, ",") or nil
end

-- Figures ----------------------------------------------------------------------

function M.round(x, decimals)
    if x == nil then return nil end
    local m = 10 ^ (decimals or 0)
    return math.floor(x * m + 0.5) / m
end

-- { median, min, max } of the numbers in list (nil values left out); nil
-- when there are none.
function M.stats(list)
    local v = {}
    for _, x in pairs(list) do if type(x) == "number" then v[#v + 1] = x end end
    if #v == 0 then return nil end
    table.sort(v)
    local n = #v
    local med = n % 2 == 1 and v[(n + 1) / 2] or (v[n / 2] + v[n / 2 + 1]) / 2
    return { med, v[1], v[n] }
end

-- The values of field over records (a list of numbers, some nil).
function M.field(records, name, scale)
    local out = {}
    for i, r in ipairs(records) do
        local x = r[name]
        out[i] = type(x) == "number" and x * (scale or 1) or nil
    end
    return out
end

function M.median(records, name, scale)
    local s = M.stats(M.field(records, name, scale))
    return s and s[1]
end

-- A number as awk prints it: whole numbers in full, others with 6 digits.
function M.num(x)
    if x == nil then return "-" end
    if x == math.floor(x) and math.abs(x) < 1e15 then return ("%d"):format(x) end
    return ("%.6g"):format(x)
end

-- "MED (MIN–MAX)" with decimals, MED alone when they are one, "-" for nil.
function M.mmm(s, decimals)
    if not s then return "-" end
    local f = "%." .. (decimals or 0) .. "f"
    if s[2] == s[3] then return f:format(s[1]) end
    return (f .. " (" .. f .. "–" .. f .. ")"):format(s[1], s[2], s[3])
end

-- a/b as "1.23x" (fmt gives the number's format), "-" when either is
-- missing or b is 0.
function M.ratio(a, b, fmt)
    if not a or not b or b == 0 then return "-" end
    return (fmt or "%.2f"):format(a / b) .. "x"
end

-- The number of processors, as nproc says.
function M.nproc()
    local p = io.popen("nproc 2>/dev/null")
    local n = p and p:read("*l")
    if p then p:close() end
    return n or "?"
end

-- Writes a progress line to stderr (not under QUIET).
function M.progress(...)
    if (os.getenv("QUIET") or "") ~= "" then return end
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    io.stderr:write("  ", table.concat(parts, "  "), "\n")
end

return M
