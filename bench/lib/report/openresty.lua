-- bench/lib/report/openresty.lua: bench/openresty's table. Per workload
-- and side: req/s and the CPU per request of the Lua server (afcgi, or
-- nginx-lua), of afcgi's nginx front, and of the HTTPS upstream, medians
-- (min-max) over the repetitions; then the ratios afcgi / nginx-lua of the
-- workload's own Lua-server CPU (less that side's hello) and of the whole
-- side's (front included).
local lib = require "report.lib"

local M = {}

local WORKLOADS = { "hello", "https", "re" }
local SIDES = { { "nginx-lua", "nginx + lua module" }, { "afcgi", "nginx front + afcgi" } }

function M.report(file)
    local records = lib.read_jsonl(file)
    local function of(workload, side) return lib.where(records, { workload = workload, side = side }) end
    local function med(workload, side, field) return lib.median(of(workload, side), field) end
    local function cell(workload, side, field, decimals)
        return lib.mmm(lib.stats(lib.field(of(workload, side), field)), decimals)
    end
    print("| workload | side | req/s | Lua server µs/req | front µs/req | upstream µs/req |")
    print("|---|---|---|---|---|---|")
    for _, w in ipairs(WORKLOADS) do
        for _, s in ipairs(SIDES) do
            print(("| %s | %s | %s | %s | %s | %s |"):format(w, s[2], cell(w, s[1], "rps", 0),
                cell(w, s[1], "app_cpu_us", 2), s[1] == "afcgi" and cell(w, s[1], "front_cpu_us", 2) or "-",
                w == "https" and cell(w, s[1], "upstream_cpu_us", 2) or "-"))
        end
    end
    print()
    local function whole(w, side)
        local a, f = med(w, side, "app_cpu_us"), med(w, side, "front_cpu_us")
        return a and (a + (f or 0))
    end
    for _, w in ipairs(WORKLOADS) do
        local line = ("%-5s whole side afcgi / nginx-lua CPU per request: %s"):format(w,
            lib.ratio(whole(w, "afcgi"), whole(w, "nginx-lua")))
        if w ~= "hello" then
            local function own(side)
                local x, h = med(w, side, "app_cpu_us"), med("hello", side, "app_cpu_us")
                return x and h and x - h
            end
            line = line .. ("; the workload's own Lua-server CPU (less hello): afcgi %.2f µs, nginx-lua "
                            .. "%.2f µs, %s"):format(own("afcgi") or 0, own("nginx-lua") or 0,
                                                     lib.ratio(own("afcgi"), own("nginx-lua")))
        end
        print(line)
    end
end

return M
