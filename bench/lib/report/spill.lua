-- bench/lib/report/spill.lua: bench/spill/run's table: per configuration
-- (bodies in files, or all in memory), the medians (min-max) over the
-- repetitions of the peak RSS growth, the answers complete, the most
-- bodies in files at once; then whether the files configuration met the
-- limit with every body answered in full.
local lib = require "report.lib"

local M = {}

local CONFIGS = {
    { "files", "defaults: --body-buffer 64k in memory, the rest in files" },
    { "memory", "every body in memory (--body-buffer over the body)" },
}

-- spill FILE LIMIT_MB
function M.report(file, limit)
    limit = tonumber(limit)
    local records = lib.read_jsonl(file)
    local any = records[1]
    if not any then error("no records in " .. file, 0) end
    print(("| %d uploads of %.1f MiB on one connection, read late | peak RSS growth, MiB | answered in full"
           .. " | most bodies in files at once | in files after | seconds |"):format(
        any.requests, (any.body_bytes or 0) / 1048576))
    print("|---|---|---|---|---|---|")
    for _, c in ipairs(CONFIGS) do
        local of = lib.where(records, { config = c[1] })
        if #of > 0 then
            local ok = lib.stats(lib.field(of, "ok"))
            print(("| %s | %s | %s of %d | %s | %s | %s |"):format(c[2],
                lib.mmm(lib.stats(lib.field(of, "growth_mb")), 1), lib.mmm(ok), of[1].requests,
                lib.mmm(lib.stats(lib.field(of, "files"))), lib.mmm(lib.stats(lib.field(of, "left"))),
                lib.mmm(lib.stats(lib.field(of, "secs")), 1)))
        end
    end
    local files = lib.where(records, { config = "files" })
    local worst, complete = 0, #files > 0
    for _, r in ipairs(files) do
        worst = math.max(worst, r.growth_mb)
        complete = complete and r.ok == r.requests and r.failed == 0
    end
    local met = complete and worst <= limit
    print(("bodies in files: peak RSS growth at most %.1f MiB (limit %d MiB), %s: %s"):format(worst, limit,
        complete and "every body answered in full" or "NOT every body answered in full",
        met and "met" or "NOT met"))
end

return M
