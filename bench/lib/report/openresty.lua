-- bench/lib/report/openresty.lua: bench/openresty's tables. Per workload
-- and side: req/s and the CPU per request of the Lua server (afcgi, or
-- nginx-lua), of afcgi's front (nginx or HAProxy), and of the HTTPS
-- upstream, medians (min-max) over the repetitions; then the ratios afcgi
-- / nginx-lua of the workload's own Lua-server CPU (less that side's
-- hello) and of the whole side's (front included); then the Lua servers'
-- system calls and user-space instructions per request, when they were
-- counted.
local lib = require "report.lib"

local M = {}

local ORDER = { "hello", "https", "re", "redis" }
local FRONTS = { nginx = "nginx front + afcgi", haproxy = "HAProxy (mpxs-conns) + afcgi" }

function M.report(file)
    local records = lib.read_jsonl(file)
    local runs = lib.where(records, { kind = "openresty" })
    local front = runs[1] and runs[1].front or "nginx"
    local sides = { { "nginx-lua", "nginx + lua module" }, { "afcgi", FRONTS[front] or front } }
    local workloads = {}
    for _, w in ipairs(ORDER) do
        if #lib.where(runs, { workload = w }) > 0 then workloads[#workloads + 1] = w end
    end
    local function of(workload, side) return lib.where(runs, { workload = workload, side = side }) end
    local function med(workload, side, field) return lib.median(of(workload, side), field) end
    local function cell(workload, side, field, decimals)
        return lib.mmm(lib.stats(lib.field(of(workload, side), field)), decimals)
    end
    print("| workload | side | req/s | Lua server µs/req | front µs/req | upstream µs/req |")
    print("|---|---|---|---|---|---|")
    for _, w in ipairs(workloads) do
        for _, s in ipairs(sides) do
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
    for _, w in ipairs(workloads) do
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
    local calls = lib.where(records, { kind = "syscalls" })
    if #calls > 0 then
        print()
        M.syscalls(calls, workloads)
    end
    local ir = lib.where(records, { kind = "instructions" })
    if #ir > 0 then
        print()
        M.instructions(ir, workloads)
    end
end

-- The table of system calls per request.
function M.syscalls(calls, workloads)
    print("| workload | system calls per request (strace -c -f, one 2 s run): nginx + lua module | afcgi |")
    print("|---|---|---|")
    for _, w in ipairs(workloads) do
        local function per(side)
            local r = lib.where(calls, { workload = w, side = side })[1]
            return r and r.per_request and ("%.2f"):format(r.per_request) or "-"
        end
        print(("| %s | %s | %s |"):format(w, per("nginx-lua"), per("afcgi")))
    end
end

-- The table of instructions per request, then for each workload but hello
-- its own (less that side's hello) and the ratio afcgi / nginx-lua.
function M.instructions(ir, workloads)
    local function per(w, side)
        local r = lib.where(ir, { workload = w, side = side })[1]
        return r and r.per_request
    end
    print("| workload | user-space instructions per request (callgrind, two runs' difference): "
          .. "nginx + lua module | afcgi |")
    print("|---|---|---|")
    for _, w in ipairs(workloads) do
        local function cell(side)
            local n = per(w, side)
            return n and lib.num(n) or "-"
        end
        print(("| %s | %s | %s |"):format(w, cell("nginx-lua"), cell("afcgi")))
    end
    for _, w in ipairs(workloads) do
        if w ~= "hello" then
            local function own(side)
                local x, h = per(w, side), per("hello", side)
                return x and h and x - h
            end
            print(("%-5s the workload's own instructions (less hello): afcgi %s, nginx-lua %s, %s")
                  :format(w, lib.num(own("afcgi")), lib.num(own("nginx-lua")),
                          lib.ratio(own("afcgi"), own("nginx-lua"))))
        end
    end
end

return M
