-- bench/lib/report/record.lua: `report.lua record KIND FILE NAME=VALUE...`:
-- one measurement, from what the harness read in /proc (the NAME=VALUE
-- arguments) and what the tools wrote (files named by arguments: an
-- afcgi-bench --json report, wrk's output, strace's table, ...), becomes one
-- JSON line appended to FILE. Each kind below says its arguments; it
-- returns the record (nil: nothing to record) and prints a progress line.
local lib = require "report.lib"

local M = {}

-- A value from the command line: a number when it reads as one.
local function value(s)
    return tonumber(s) or s
end

local function need(a, name)
    local v = a[name]
    if v == nil or v == "" then error("record: missing " .. name .. "=", 0) end
    return v
end

local function bench_report(a, name)
    return lib.decode(lib.read_file(need(a, name)))
end

-- CPU microseconds per request from clock ticks.
local function cpu_us(ticks, hz, n)
    if ticks == nil or ticks == "" then return nil end
    return lib.round(n > 0 and ticks / hz / n * 1e6 or 0, 2)
end

-- bench/run, direct FastCGI: workload shape server rep ticks hz bench=JSON
-- [err=STDERR]: one afcgi-bench run and the server's CPU ticks meanwhile.
function M.direct(a)
    local r = bench_report(a, "bench")
    local rec = { kind = "direct", workload = need(a, "workload"), shape = need(a, "shape"),
                  server = need(a, "server"), rep = value(need(a, "rep")) }
    if not r or not r.rps then
        rec.no_result, rec.ok_per_s, rec.ok, rec.failed = true, 0, 0, 0
        io.stderr:write(("  %s %s %s: afcgi-bench gave no result: %s\n"):format(rec.workload, rec.shape,
            rec.server, (lib.read_file(a.err or "") or ""):sub(1, 300)))
        return rec
    end
    rec.ok, rec.failed = r.ok, r.failed
    rec.ok_per_s = lib.round(r.duration_s > 0 and r.ok / r.duration_s or 0)
    rec.p50_ms = lib.round(r.latency_us.p50 / 1000, 3)
    rec.p99_ms = lib.round(r.latency_us.p99 / 1000, 3)
    rec.errors = lib.bench_errors(r)
    rec.cpu_us = cpu_us(tonumber(a.ticks), tonumber(need(a, "hz")), r.ok)
    lib.progress(rec.workload, rec.shape, rec.server, rec.rep, rec.ok_per_s, rec.p50_ms, rec.p99_ms,
                 rec.ok, rec.failed, lib.kinds_text(rec.errors, lib.KINDS) or "-", rec.cpu_us)
    return rec
end

-- bench/run, through nginx: conc server rep backend_ticks nginx_ticks hz
-- wrk=OUTPUT: one wrk run, the CPU ticks of the FastCGI server behind nginx
-- (none for nginx-lua) and of nginx.
function M.http(a)
    local w = lib.wrk(lib.read_file(need(a, "wrk")))
    local rec = { kind = "http", conc = value(need(a, "conc")), server = need(a, "server"),
                  rep = value(need(a, "rep")), requests = w.requests, non2xx = w.non2xx,
                  socket_errors = w.socket_errors, p50_ms = w.p50_ms, p99_ms = w.p99_ms }
    -- good answers per second: wrk's rate less its share of non-2xx answers
    rec.ok_per_s = lib.round(w.requests > 0 and w.rps * (w.requests - w.non2xx) / w.requests or 0)
    local hz = tonumber(need(a, "hz"))
    rec.backend_cpu_us = cpu_us(tonumber(a.backend_ticks), hz, w.requests)
    rec.nginx_cpu_us = cpu_us(tonumber(a.nginx_ticks), hz, w.requests)
    lib.progress(rec.conc, rec.server, rec.rep, rec.ok_per_s, lib.num(rec.p50_ms), lib.num(rec.p99_ms),
                 rec.requests, rec.non2xx, lib.kinds_text(rec.socket_errors, lib.WRK_KINDS) or "-",
                 rec.backend_cpu_us or "-", rec.nginx_cpu_us)
    return rec
end

-- bench/run, long-poll: server wanted conns rss0 rss pss0 pss nproc
-- bench=JSON: an afcgi-bench --hold run and the server's memory (kB)
-- before and while the requests wait.
function M.hold(a)
    local r = bench_report(a, "bench")
    local rec = { kind = "hold", server = need(a, "server"), wanted = value(need(a, "wanted")),
                  conns = value(need(a, "conns")), nproc = value(need(a, "nproc")),
                  rss0_kb = value(need(a, "rss0")), rss_kb = value(need(a, "rss")),
                  pss0_kb = value(need(a, "pss0")), pss_kb = value(need(a, "pss")) }
    rec.held = r and r.held or 0
    if r then rec.errors = lib.bench_errors(r) else rec.no_result = true end
    if rec.held > 0 then
        rec.rss_growth_b = lib.round((rec.rss_kb - rec.rss0_kb) * 1024 / rec.held)
        rec.pss_growth_b = lib.round((rec.pss_kb - rec.pss0_kb) * 1024 / rec.held)
        rec.rss_total_b = lib.round(rec.rss_kb * 1024 / rec.held)
    end
    lib.progress(rec.server, rec.wanted, rec.held, rec.conns, rec.rss0_kb, rec.rss_kb, rec.pss0_kb,
                 rec.pss_kb, rec.nproc, rec.rss_growth_b or "-", rec.pss_growth_b or "-",
                 rec.rss_total_b or "-", rec.no_result and "no-result" or lib.kinds_text(rec.errors, lib.KINDS) or "-")
    return rec
end

-- The total Ir callgrind wrote in an --callgrind-out-file.
local function callgrind_ir(path)
    for line in (lib.read_file(path) or ""):gmatch("[^\n]+") do
        local n = line:match("^summary: (%d+)") or line:match("^totals: (%d+)")
        if n then return tonumber(n) end
    end
    return nil
end

-- bench/run, targets: n1 cg1=FILE n2 cg2=FILE: two callgrind runs of N1 and
-- N2 requests; instructions per request is their difference over N2 - N1.
function M.instructions(a)
    local n1, n2 = tonumber(need(a, "n1")), tonumber(need(a, "n2"))
    local ir1, ir2 = callgrind_ir(need(a, "cg1")), callgrind_ir(need(a, "cg2"))
    if not ir1 or not ir2 then
        io.stderr:write("  callgrind gave no totals\n")
        return nil
    end
    local rec = { kind = "instructions", n1 = n1, ir1 = ir1, n2 = n2, ir2 = ir2,
                  per_request = lib.round((ir2 - ir1) / (n2 - n1)) }
    lib.progress("instructions", n1, ir1, n2, ir2, rec.per_request)
    return rec
end

-- The calls of strace -c's table (its "total" line).
local function strace_calls(file)
    local calls = 0
    for line in (lib.read_file(file) or ""):gmatch("[^\n]+") do
        local f = {}
        for w in line:gmatch("%S+") do f[#f + 1] = w end
        if f[#f] == "total" then calls = tonumber(f[4]) or 0 end
    end
    return calls
end

-- bench/run, targets: server shape n strace=TABLE: strace -c -f over N requests.
function M.syscalls(a)
    local calls = strace_calls(need(a, "strace"))
    local n = tonumber(need(a, "n"))
    local rec = { kind = "syscalls", server = need(a, "server"), shape = need(a, "shape"), n = n,
                  calls = calls, per_request = lib.round(calls / n, 3) }
    lib.progress("syscalls", rec.server, rec.shape, n, calls, ("%.3f"):format(rec.per_request))
    return rec
end

-- bench/run: started mode reps duration sweep peers phases nginx_workers
-- load_at_start: the run's settings (peers and phases comma-separated).
function M.settings(a)
    local rec = { kind = "settings" }
    for k, v in pairs(a) do rec[k] = value(v) end
    for _, k in ipairs({ "peers", "phases" }) do
        local list = {}
        for x in tostring(need(a, k)):gmatch("[^,]+") do list[#list + 1] = x end
        rec[k] = list
    end
    return rec
end

-- bench/run: phase seconds.
function M.phase(a)
    return { kind = "phase", phase = need(a, "phase"), seconds = value(need(a, "seconds")) }
end

-- bench/run: load_at_end seconds.
M["end"] = function(a)
    return { kind = "end", load_at_end = need(a, "load_at_end"), seconds = value(need(a, "seconds")) }
end

-- bench/run: the versions of every program, one line each on stdin.
function M.versions()
    local lines = {}
    for l in io.stdin:lines() do lines[#lines + 1] = l end
    return { kind = "versions", lines = lines }
end

-- bench/longpoll: one repetition of one front. The figures read in /proc
-- (rep front clients parked conns_tcp afcgi_fd afcgi_rss0 afcgi_rss front_fd
-- front_rss0 front_rss front_procs slab_delta afcgi_ticks front_ticks hz
-- wrk_duration conns_after), afcgi's /status while they wait (status=JSON)
-- and after the wrk run (status_after=JSON), wrk's output (wrk=FILE) and
-- the client's result line (result=JSON).
function M.longpoll(a)
    local rec = { kind = "longpoll" }
    for _, k in ipairs({ "rep", "clients", "parked", "conns_tcp", "afcgi_fd", "afcgi_rss0", "afcgi_rss",
                         "front_fd", "front_rss0", "front_rss", "front_procs", "slab_delta",
                         "conns_after" }) do
        rec[k] = tonumber(need(a, k))
    end
    rec.front = need(a, "front")
    local st, after = lib.decode(a.status) or {}, lib.decode(a.status_after) or {}
    -- the status request counts itself: one connection, one request in flight
    rec.conns_status = st.connections and st.connections - 1
    rec.still_parked = (after.requests_in_flight or 1) - 1
    local w = lib.wrk(lib.read_file(need(a, "wrk")))
    rec.wrk_rps, rec.wrk_p99_ms = lib.round(w.rps), w.p99_ms
    rec.wrk_errors = w.non2xx
    for _, n in pairs(w.socket_errors) do rec.wrk_errors = rec.wrk_errors + n end
    local res = lib.decode(a.result) or {}
    rec.wake_all_ms, rec.wake_p50_ms, rec.wake_p99_ms = res.all_ms, res.p50_ms, res.p99_ms
    rec.answered, rec.bad, rec.early, rec.wake_post_ms = res.answered, res.bad, res.early, res.wake_ms
    -- RSS growth per parked long-poll, afcgi + front, kB
    local growth = rec.afcgi_rss - rec.afcgi_rss0 + rec.front_rss - rec.front_rss0
    rec.rss_per_poll_kb = lib.round(rec.parked > 0 and growth / rec.parked or 0, 2)
    -- CPU per /hello request in the wrk run, µs (the waiting long-polls cost none)
    local d = need(a, "wrk_duration")
    local s = tonumber(d:match("^[%d.]+"))
    if d:find("ms$") then s = s / 1000 elseif d:find("m$") then s = s * 60 elseif d:find("h$") then s = s * 3600 end
    local n, hz = rec.wrk_rps * s, tonumber(need(a, "hz"))
    rec.afcgi_cpu_us = lib.round(n > 0 and tonumber(need(a, "afcgi_ticks")) / hz / n * 1e6 or 0, 1)
    rec.front_cpu_us = lib.round(n > 0 and tonumber(need(a, "front_ticks")) / hz / n * 1e6 or 0, 1)
    io.stderr:write("  ", lib.encode(rec), "\n")
    return rec
end

-- bench/redis: target rep bench=JSON (afcgi-bench against afcgi), or
-- target=redis-benchmark rep csv=FILE (redis-benchmark --csv). Fails when
-- afcgi-bench counted failed requests.
function M.redis(a)
    local rec = { kind = "redis", target = need(a, "target"), rep = value(need(a, "rep")) }
    if a.csv then
        -- a header line ("test","rps",...,"p99_latency_ms",...), then one line of figures
        local rows = {}
        for line in (lib.read_file(a.csv) or ""):gmatch("[^\n]+") do
            local f = {}
            for v in line:gmatch('"([^"]*)"') do f[#f + 1] = v end
            rows[#rows + 1] = f
        end
        local head, row = rows[1] or {}, rows[2] or {}
        for i, name in ipairs(head) do
            if name == "rps" then rec.rps = tonumber(row[i]) end
            if name == "p99_latency_ms" then rec.p99_ms = tonumber(row[i]) end
        end
        if not rec.rps then error("record redis: no figures in " .. a.csv, 0) end
        return rec
    end
    local r = bench_report(a, "bench")
    if not r or not r.rps then error("record redis: afcgi-bench gave no report", 0) end
    rec.rps, rec.p99_ms, rec.ok, rec.failed = lib.round(r.rps), lib.round(r.latency_us.p99 / 1000, 2), r.ok, r.failed
    if r.failed > 0 then error(("bench/redis: %d failed requests"):format(r.failed), 0) end
    return rec
end

-- bench/dispatch: mode workload ticks hz bench=JSON (one afcgi-bench run and
-- the master's CPU ticks meanwhile), or mode workload=spread status=JSON
-- (afcgi's /status while 64 requests are held).
function M.dispatch(a)
    local rec = { kind = "dispatch", mode = need(a, "mode"), workload = need(a, "workload") }
    if a.status then
        local st = lib.decode(a.status) or {}
        rec.connections = {}
        for i, w in ipairs(st.workers or {}) do rec.connections[i] = w.connections end
        print(("%-7s connections per worker: %s"):format(rec.mode, table.concat(rec.connections, "/")))
        return rec
    end
    local r = bench_report(a, "bench")
    if not r or not r.rps then error("record dispatch: afcgi-bench gave no report", 0) end
    rec.rps, rec.p99_ms, rec.ok = r.rps, r.latency_us.p99 / 1000, r.ok
    rec.master_cpu_ms = lib.round(tonumber(need(a, "ticks")) * 1000 / tonumber(need(a, "hz")))
    print(("%-7s req/s=%.0f p99_ms=%.2f ok=%d master_cpu_ms=%d"):format(rec.mode, rec.rps, rec.p99_ms,
                                                                     rec.ok, rec.master_cpu_ms))
    return rec
end

-- bench/openresty: workload side rep app_ticks front_ticks upstream_ticks hz
-- wrk=OUTPUT: one wrk run against one side and the CPU ticks meanwhile of
-- its Lua server (afcgi, or nginx-lua itself), of its front (afcgi's nginx;
-- 0 for nginx-lua) and of the HTTPS upstream. Fails on errors: the two
-- sides must answer every request.
function M.openresty(a)
    local w = lib.wrk(lib.read_file(need(a, "wrk")))
    local rec = { kind = "openresty", workload = need(a, "workload"), side = need(a, "side"),
                  rep = value(need(a, "rep")), front = a.front or "nginx", requests = w.requests,
                  rps = lib.round(w.rps), p99_ms = w.p99_ms }
    if w.requests == 0 or w.non2xx > 0 or next(w.socket_errors) then
        error(("bench/openresty: %s %s: %d requests, %d not 2xx, socket errors %s"):format(rec.workload,
            rec.side, w.requests, w.non2xx, lib.kinds_text(w.socket_errors, lib.WRK_KINDS) or "none"), 0)
    end
    local hz = tonumber(need(a, "hz"))
    rec.app_cpu_us = cpu_us(tonumber(need(a, "app_ticks")), hz, w.requests)
    rec.front_cpu_us = cpu_us(tonumber(need(a, "front_ticks")), hz, w.requests)
    rec.upstream_cpu_us = cpu_us(tonumber(need(a, "upstream_ticks")), hz, w.requests)
    lib.progress(rec.workload, rec.side, rec.rep, rec.rps, lib.num(rec.p99_ms), rec.app_cpu_us,
                 rec.front_cpu_us, rec.upstream_cpu_us)
    return rec
end

-- bench/openresty: workload side strace=TABLE wrk=OUTPUT: the Lua server's
-- system calls (strace -c -f) over one wrk run, per request answered.
M["openresty-syscalls"] = function(a)
    local w = lib.wrk(lib.read_file(need(a, "wrk")))
    local calls = strace_calls(need(a, "strace"))
    local rec = { kind = "syscalls", workload = need(a, "workload"), side = need(a, "side"),
                  requests = w.requests, calls = calls,
                  per_request = w.requests > 0 and lib.round(calls / w.requests, 2) or nil }
    lib.progress("syscalls", rec.workload, rec.side, w.requests, calls, lib.num(rec.per_request))
    return rec
end

-- bench/openresty --instructions: workload side cg1=FILE cg2=FILE and the
-- requests of each run, n1 and n2 (afcgi-bench's count) or wrk1 and wrk2
-- (wrk's outputs): user-space instructions per request, the difference of
-- the two runs over the difference of their requests.
M["openresty-instructions"] = function(a)
    local function requests(i)
        if a["n" .. i] then return tonumber(a["n" .. i]) end
        return lib.wrk(lib.read_file(need(a, "wrk" .. i))).requests
    end
    local n1, n2 = requests(1), requests(2)
    local ir1, ir2 = callgrind_ir(need(a, "cg1")), callgrind_ir(need(a, "cg2"))
    if not ir1 or not ir2 or not n1 or not n2 or n2 <= n1 then
        error(("bench/openresty --instructions: %s %s: no totals or too few requests (%s, %s)")
              :format(need(a, "workload"), need(a, "side"), tostring(n1), tostring(n2)), 0)
    end
    local rec = { kind = "instructions", workload = need(a, "workload"), side = need(a, "side"),
                  n1 = n1, ir1 = ir1, n2 = n2, ir2 = ir2,
                  per_request = lib.round((ir2 - ir1) / (n2 - n1)) }
    lib.progress("instructions", rec.workload, rec.side, n1, ir1, n2, ir2, rec.per_request)
    return rec
end

-- bench/parked: rep n rss0_kb rss1_kb (before, waiting) heap0 (before, after
-- a full collection) heap1 heap2 (waiting: as it is, after one), in bytes.
function M.parked(a)
    local n = tonumber(need(a, "n"))
    local rss0, rss1 = tonumber(need(a, "rss0_kb")), tonumber(need(a, "rss1_kb"))
    local h0, h1, h2 = tonumber(need(a, "heap0")), tonumber(need(a, "heap1")), tonumber(need(a, "heap2"))
    local rec = { kind = "parked", rep = value(need(a, "rep")), n = n,
                  rss_per_req = lib.round((rss1 - rss0) * 1024 / n),
                  heap_per_req = lib.round((h1 - h0) / n),
                  heap_live_per_req = lib.round((h2 - h0) / n) }
    rec.c_per_req = rec.rss_per_req - rec.heap_live_per_req
    lib.progress("parked", rec.rep, n, rec.rss_per_req, rec.heap_per_req, rec.heap_live_per_req)
    return rec
end

-- bench/split: rep workload shape server user sys (ticks) hz bench=JSON:
-- one afcgi-bench run and the server's user and system CPU meanwhile.
function M.split(a)
    local r = bench_report(a, "bench")
    local hz = tonumber(need(a, "hz"))
    local rec = { kind = "split", rep = value(need(a, "rep")), workload = need(a, "workload"),
                  shape = need(a, "shape"), server = need(a, "server"),
                  ok = r and r.ok or 0, failed = r and r.failed or 0 }
    rec.ok_per_s = lib.round(r and r.duration_s > 0 and r.ok / r.duration_s or 0)
    rec.user_us = cpu_us(tonumber(need(a, "user")), hz, rec.ok)
    rec.sys_us = cpu_us(tonumber(need(a, "sys")), hz, rec.ok)
    rec.cpu_us = rec.user_us and rec.sys_us and rec.user_us + rec.sys_us
    lib.progress(rec.workload, rec.shape, rec.server, rec.rep, rec.ok_per_s, rec.ok, rec.failed,
                 rec.user_us, rec.sys_us)
    return rec
end

-- bench/soak: soak-client name allow load (a client and the error kinds it
-- provokes on purpose, comma-separated); soak-exit name rc (its exit
-- status); soak-run: the run's figures (duration, reload_every, base_rss,
-- base_fds, idle_rss, idle_fds, server_cpu, server_rc, revision);
-- soak-problem text: a failure found while running. (The samples and
-- reloads bench/soak writes itself: numbers only.)
M["soak-client"] = function(a)
    return { kind = "client", name = need(a, "name"), allow = a.allow or "", load = a.load or "" }
end

M["soak-run"] = function(a)
    local rec = { kind = "run" }
    for k, v in pairs(a) do rec[k] = k == "revision" and v or value(v) end
    return rec
end

M["soak-exit"] = function(a)
    return { kind = "exit", name = need(a, "name"), rc = value(need(a, "rc")) }
end

M["soak-problem"] = function(a)
    return { kind = "problem", text = need(a, "text") }
end

-- bench/spill/run: config rep rss0 hwm files left secs requests bench=JSON
-- [err=STDERR]: one load run of late readers; memory in kB (rss0 before,
-- hwm the peak during it), files the most bodies seen in files at once,
-- left those still in files after it.
function M.spill(a)
    local r = bench_report(a, "bench")
    local rec = { kind = "spill", config = need(a, "config"), rep = value(need(a, "rep")),
                  rss0_kb = value(need(a, "rss0")), hwm_kb = value(need(a, "hwm")),
                  files = value(need(a, "files")), left = value(need(a, "left")),
                  secs = value(need(a, "secs")), requests = value(need(a, "requests")) }
    rec.growth_mb = lib.round((rec.hwm_kb - rec.rss0_kb) / 1024, 1)
    if r and r.ok then
        rec.ok, rec.failed, rec.errors, rec.body_bytes = r.ok, r.failed, lib.bench_errors(r), r.body_bytes
    else
        rec.no_result, rec.ok, rec.failed, rec.errors = true, 0, rec.requests, {}
        io.stderr:write(("  %s: afcgi-bench gave no result: %s\n"):format(rec.config,
            (lib.read_file(a.err or "") or ""):sub(1, 300)))
    end
    lib.progress(rec.config, "rep " .. rec.rep, "RSS " .. rec.rss0_kb .. " kB -> peak " .. rec.hwm_kb
                 .. " kB (+" .. rec.growth_mb .. " MiB)", rec.ok .. "/" .. rec.requests .. " answered in full",
                 "at most " .. rec.files .. " in files", lib.kinds_text(rec.errors, lib.KINDS) or "-",
                 rec.secs .. " s")
    return rec
end

-- record KIND FILE NAME=VALUE...
function M.main(args)
    local kind, file = args[1], args[2]
    local build = kind and M[kind]
    if type(build) ~= "function" or kind == "main" or not file then
        error("usage: report.lua record KIND FILE NAME=VALUE...", 0)
    end
    local a = {}
    for i = 3, #args do
        local k, v = args[i]:match("^([%w_]+)=(.*)$")
        if not k then error("record: not NAME=VALUE: " .. args[i], 0) end
        a[k] = v
    end
    local rec = build(a)
    if rec then lib.append_jsonl(file, rec) end
end

return M
