-- bench/lib/report/redis.lua: bench/redis's lines: one per repetition
-- (afcgi + Redis, afcgi hello, redis-benchmark side by side), then the
-- table of medians (min-max).
local lib = require "report.lib"

local M = {}

local TARGETS = { "afcgi-redis", "afcgi-hello", "redis-benchmark" }

-- redis FILE INFLIGHT [REP]: the line of repetition REP, or the table.
function M.report(file, inflight, rep)
    local records = lib.read_jsonl(file)
    local function of(target, r)
        return lib.where(records, r and { target = target, rep = r } or { target = target })
    end
    if rep then
        local r = tonumber(rep)
        local a, h, b = of(TARGETS[1], r)[1], of(TARGETS[2], r)[1], of(TARGETS[3], r)[1]
        if not (a and h and b) then error("repetition " .. rep .. " is not complete", 0) end
        print(("rep %d: afcgi+redis %.0f req/s p99 %.2f ms | afcgi hello %.0f req/s p99 %.2f ms | "
               .. "redis-benchmark INCR %.0f req/s p99 %.2f ms"):format(r, a.rps, a.p99_ms, h.rps, h.p99_ms,
                                                                      b.rps, b.p99_ms))
        return
    end
    local function mmm(target, field, f)
        local s = lib.stats(lib.field(of(target), field))
        if not s then return "-" end
        return (f .. " (" .. f .. "-" .. f .. ")"):format(s[1], s[2], s[3])
    end
    local function row(label, target)
        print(("| %s | %s | %s |"):format(label, mmm(target, "rps", "%.0f"), mmm(target, "p99_ms", "%.2f")))
    end
    print(("| one worker, %s in flight | req/s, median (min-max) | p99 ms, median (min-max) |"):format(inflight))
    print("|---|---|---|")
    row("afcgi + Redis (examples/redis_counter.lua)", "afcgi-redis")
    row("afcgi hello, no Redis", "afcgi-hello")
    row(("redis-benchmark INCR, %s clients"):format(inflight), "redis-benchmark")
    local a, b = lib.median(of("afcgi-redis"), "rps"), lib.median(of("redis-benchmark"), "rps")
    print(("afcgi + Redis reaches %s of Redis alone (redis-benchmark)"):format(lib.ratio(a, b)))
end

return M
