-- bench/lib/report.lua: the benchmark harnesses' one reporting program.
-- The bash scripts start and stop the processes and read /proc; every
-- figure they keep goes through here, as JSON lines (one record a line,
-- each with its "kind"), and every table, summary and plot input comes out
-- of here. Run with LuaJIT (lua-cjson):
--
--   luajit bench/lib/report.lua COMMAND ARGS...
--
--   record KIND FILE NAME=VALUE...  one measurement as a JSON line appended to
--                         FILE (report/record.lua lists the kinds)
--   get KEY...            a field of the JSON document on stdin (KEY.KEY for
--                         nested ones; an empty line when it is missing)
--   run DIR               bench/run's tables (Markdown) from DIR/results.jsonl
--   run-plots DIR PLOTS   the gnuplot script of bench/run's plots into PLOTS
--   run-settings DIR      the settings of that run as shell assignments
--   longpoll FILE FRONTS  bench/longpoll's table from its records, fronts in
--                         the order of FRONTS (comma-separated)
--   redis FILE INFLIGHT [REP]  bench/redis: repetition REP's line, or the table
--   openresty FILE        bench/openresty's table and ratios from its records
--   spill FILE LIMIT_MB   bench/spill/run's table, and whether the bodies in
--                         files stayed within LIMIT_MB with every one answered
--   parked FILE           bench/parked's table: bytes per parked request
--   split FILE            bench/split's table: user and system CPU per request
--   soak WORK OUT         bench/soak's report; exit status 0 on PASS, 1 on FAIL
--   soak-plot OUT GP MINUTES EVERY  the gnuplot script of bench/soak's
--                         soak.png (GP: bench/soak.d/soak.gp, the styling)
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = here .. "/?.lua;" .. package.path

local lib = require "report.lib"

local commands = {}

function commands.record(args) require("report.record").main(args) end

function commands.get(args)
    local doc = lib.decode(io.read("*a"))
    for _, key in ipairs(args) do
        local v = doc
        for part in key:gmatch("[^.]+") do
            v = type(v) == "table" and (v[part] or v[tonumber(part)]) or nil
        end
        if type(v) == "number" then print(lib.num(v))
        elseif type(v) == "string" then print(v)
        else print("") end
    end
end

function commands.run(args) require("report.run").tables(assert(args[1], "run DIR")) end
commands["run-plots"] = function(args)
    require("report.run").plots(assert(args[1], "run-plots DIR PLOTS"), assert(args[2], "run-plots DIR PLOTS"))
end
commands["run-settings"] = function(args) require("report.run").settings(assert(args[1], "run-settings DIR")) end

function commands.longpoll(args)
    require("report.longpoll").table(assert(args[1], "longpoll FILE FRONTS"), assert(args[2], "longpoll FILE FRONTS"))
end

function commands.redis(args)
    require("report.redis").report(assert(args[1], "redis FILE INFLIGHT [REP]"), assert(args[2], "redis FILE INFLIGHT"),
                                   args[3])
end

function commands.parked(args)
    local recs = lib.where(lib.read_jsonl(assert(args[1], "parked FILE")), { kind = "parked" })
    local function cell(f) return lib.mmm(lib.stats(lib.field(recs, f)), 0) end
    print(("| %d requests parked in afcgi.sleep, 64 connections, %d reps | bytes per request, "
           .. "median (min-max) |"):format(recs[1] and recs[1].n or 0, #recs))
    print("|---|---|")
    print("| RSS growth | " .. cell("rss_per_req") .. " |")
    print("| Lua heap growth (as it is) | " .. cell("heap_per_req") .. " |")
    print("| Lua heap growth (after a full collection) | " .. cell("heap_live_per_req") .. " |")
    print("| the rest (C side and allocator overhead) | " .. cell("c_per_req") .. " |")
end

function commands.split(args)
    local recs = lib.where(lib.read_jsonl(assert(args[1], "split FILE")), { kind = "split" })
    print("| workload | server | req/s | user µs/req | system µs/req | CPU µs/req | failed |")
    print("|---|---|---|---|---|---|---|")
    local med = {}
    for _, w in ipairs({ { "hello", "64x1" }, { "upload", "16x1" } }) do
        for _, server in ipairs({ "afcgi", "c" }) do
            local rs = lib.where(recs, { workload = w[1], server = server })
            local failed = 0
            for _, r in ipairs(rs) do failed = failed + r.failed end
            local function cell(f, d) return lib.mmm(lib.stats(lib.field(rs, f)), d) end
            med[w[1] .. server] = { sys = lib.median(rs, "sys_us"), cpu = lib.median(rs, "cpu_us"),
                                    rps = lib.median(rs, "ok_per_s") }
            print(("| %s %s | %s | %s | %s | %s | %s | %d |"):format(w[1], w[2],
                server == "c" and "libfcgi C (64 procs)" or "afcgi (1 process)", cell("ok_per_s", 0),
                cell("user_us", 2), cell("sys_us", 2), cell("cpu_us", 2), failed))
        end
    end
    print()
    for _, w in ipairs({ "hello", "upload" }) do
        local a, c = med[w .. "afcgi"], med[w .. "c"]
        print(("%s: afcgi CPU %s of C's, req/s %s; afcgi's system time alone %s of C's CPU"):format(w,
            lib.ratio(a.cpu, c.cpu), lib.ratio(a.rps, c.rps), lib.ratio(a.sys, c.cpu)))
    end
end

function commands.openresty(args)
    require("report.openresty").report(assert(args[1], "openresty FILE"))
end

function commands.spill(args)
    require("report.spill").report(assert(args[1], "spill FILE LIMIT_MB"), assert(args[2], "spill FILE LIMIT_MB"))
end

function commands.soak(args)
    os.exit(require("report.soak").report(assert(args[1], "soak WORK OUT"), assert(args[2], "soak WORK OUT")))
end

commands["soak-plot"] = function(args)
    require("report.soak").plot(assert(args[1], "soak-plot OUT SOAK_GP MINUTES EVERY"), args[2], args[3], args[4])
end

local command = commands[arg[1] or ""]
if not command then
    io.stderr:write("usage: luajit bench/lib/report.lua record|get|run|run-plots|run-settings|longpoll|redis|"
                    .. "spill|parked|split|soak|soak-plot ARGS... (see the comment at its top)\n")
    os.exit(2)
end
local args = {}
for i = 2, #arg do args[#args + 1] = arg[i] end
local ok, err = pcall(command, args)
if not ok then
    io.stderr:write("report.lua ", arg[1], ": ", tostring(err), "\n")
    os.exit(2)
end
