-- bench/lib/report/run.lua: bench/run's tables (Markdown) and its plots
-- (a gnuplot script, data inline) from the records of DIR/results.jsonl.
-- Every figure is the median of the repetitions, with min-max beside it; a
-- ratio afcgi/peer divides two medians measured side by side in the run.
local lib = require "report.lib"

local M = {}

local LABEL = { afcgi = "afcgi (1 process)", php = "php-fpm (64 children)", go = "Go net/http/fcgi",
                c = "libfcgi C (64 procs)", wsapi = "WSAPI/LuaJIT (64 procs)",
                ["nginx-lua"] = "nginx + Lua module" }

-- Servers that multiplex requests on one connection.
local function multiplexes(s) return s == "afcgi" or s == "go" end

local function load_run(dir)
    local all = lib.read_jsonl(dir .. "/results.jsonl")
    local run = { dir = dir, by = {} }
    for _, r in ipairs(all) do
        run.by[r.kind] = run.by[r.kind] or {}
        table.insert(run.by[r.kind], r)
    end
    local function one(kind) return (run.by[kind] or {})[1] end
    run.settings = one("settings")
    if not run.settings then error(dir .. "/results.jsonl: no results there (no settings record)", 0) end
    run.ending, run.versions = one("end") or {}, one("versions") or { lines = {} }
    for _, k in ipairs({ "direct", "http", "hold", "instructions", "syscalls" }) do
        run[k] = run.by[k] or {}
    end
    run.servers = run.settings.peers
    return run
end

-- The distinct values of the fields (e.g. workload and shape) in order of
-- first appearance.
local function distinct(records, a, b)
    local out, seen = {}, {}
    for _, r in ipairs(records) do
        local key = tostring(r[a]) .. "\0" .. tostring(b and r[b] or "")
        if not seen[key] then seen[key] = true; out[#out + 1] = r end
    end
    return out
end

local function stats_of(records, field) return lib.stats(lib.field(records, field)) end
local function first(s) return s and s[1] end

-- The error kinds summed over records: "read=12,protocol=3", or "none".
local function errors_of(records, field, kinds)
    local sum = {}
    for _, r in ipairs(records) do
        for k, n in pairs(r[field] or {}) do sum[k] = (sum[k] or 0) + n end
    end
    return lib.kinds_text(sum, kinds) or "none"
end

-- The start of each section: its title, its text, the head of its table
-- (${workers}: nginx's worker_processes).
local HEADINGS = {
    direct = [[
### Direct FastCGI (afcgi-bench, closed loop, straight to the server)

Shape CxM: C connections, M requests in flight on each. req/s counts valid answers only.
CPU: server utime+stime over all its processes, per valid answer. afcgi/peer: ratio of medians.

| workload | shape | server | req/s | p99 ms | CPU µs/req | req/s afcgi/peer | CPU afcgi/peer | errors |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |]],
    http = [[
### Through nginx (wrk, HTTP/1.1 keep-alive, GET /hello; nginx: upstream keepalive, fastcgi_keep_conn on)

nginx worker_processes ${workers}. CPU: the FastCGI server's and nginx's, per request.
c/(req/s): the mean time a request took, by Little's law (each of wrk's c connections
always has one request out). wrk's percentiles count only answered requests: where
c/(req/s) is above p99 (marked !), some connections waited without an answer for much of
the run, i.e. the server served a subset of the clients.

| wrk -c | server | req/s | p50 ms | p99 ms | c/(req/s) ms | server CPU µs/req | nginx CPU µs/req | req/s afcgi/peer | errors |
| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |]],
    hold = [[
### Long-poll: requests waiting 10 s, held open by afcgi-bench --hold

RSS and PSS summed over the server's processes, before and while the requests wait.
growth/req: (while - before) / held. total/req: RSS while waiting / held (for servers
with one request per process, the whole process is what a waiting request costs).

| server | held / asked | connections | processes | RSS before → waiting | RSS growth/req | PSS growth/req | RSS total/req | errors |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |]],
}

-- Section kind of the run: nothing when it has no records, else its heading
-- and true.
local function heading(run, out, kind)
    if #run[kind] == 0 then return false end
    out((HEADINGS[kind]:gsub("%${workers}", lib.num(run.settings.nginx_workers))))
    return true
end

local function report_direct(run, out)
    local d = run.direct
    if not heading(run, out, "direct") then return end
    for _, ws in ipairs(distinct(d, "workload", "shape")) do
        local base = {}
        for _, r in ipairs(lib.where(d, { workload = ws.workload, shape = ws.shape, server = "afcgi" })) do
            if r.rep ~= "probe" then base[#base + 1] = r end
        end
        local base_rps, base_cpu = first(stats_of(base, "ok_per_s")), first(stats_of(base, "cpu_us"))
        for _, s in ipairs(run.servers) do
            local rows = lib.where(d, { workload = ws.workload, shape = ws.shape, server = s })
            if #rows > 0 then
                local probe = #lib.where(rows, { rep = "probe" }) > 0
                local rps, cpu = stats_of(rows, "ok_per_s"), stats_of(rows, "cpu_us")
                local no_ratio = s == "afcgi" or probe
                out(("| %s | %s | %s%s | %s | %s | %s | %s | %s | %s |"):format(ws.workload, ws.shape,
                    LABEL[s] or s, probe and " (probe)" or "", lib.mmm(rps), lib.mmm(stats_of(rows, "p99_ms"), 2),
                    lib.mmm(cpu, 1), no_ratio and "-" or lib.ratio(base_rps, first(rps)),
                    no_ratio and "-" or lib.ratio(base_cpu, first(cpu)), errors_of(rows, "errors", lib.KINDS)))
            end
        end
    end
    out("")
end

local function report_http(run, out)
    local h = run.http
    if not heading(run, out, "http") then return end
    local servers = {}
    for i, s in ipairs(run.servers) do servers[i] = s end
    servers[#servers + 1] = "nginx-lua"
    for _, c in ipairs(distinct(h, "conc")) do
        local conc = c.conc
        local base = first(stats_of(lib.where(h, { conc = conc, server = "afcgi" }), "ok_per_s"))
        for _, s in ipairs(servers) do
            local rows = lib.where(h, { conc = conc, server = s })
            if #rows > 0 then
                local rps, p99 = stats_of(rows, "ok_per_s"), stats_of(rows, "p99_ms")
                local little = "-"
                if first(rps) and first(rps) ~= 0 then
                    local m = conc / first(rps) * 1000
                    little = ("%.2f%s"):format(m, m > (first(p99) or 0) and " !" or "")
                end
                local non2xx, sockets = 0, {}
                for _, r in ipairs(rows) do
                    if r.non2xx > 0 then non2xx = non2xx + r.non2xx end
                    sockets[#sockets + 1] = lib.kinds_text(r.socket_errors or {}, lib.WRK_KINDS)
                end
                local errs = non2xx > 0 and "non-2xx=" .. non2xx or ""
                if #sockets > 0 then
                    errs = errs .. (errs ~= "" and "," or "") .. "socket " .. table.concat(sockets, " ")
                end
                out(("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(lib.num(conc), LABEL[s] or s,
                    lib.mmm(rps), lib.mmm(stats_of(rows, "p50_ms"), 2), lib.mmm(p99, 2), little,
                    lib.mmm(stats_of(rows, "backend_cpu_us"), 1), lib.mmm(stats_of(rows, "nginx_cpu_us"), 1),
                    s == "afcgi" and "-" or lib.ratio(base, first(rps)), errs ~= "" and errs or "none"))
            end
        end
    end
    out("")
end

-- The errors of a hold record as printed: "-" when none.
local function hold_errors(r)
    if r.no_result then return "no-result" end
    return lib.kinds_text(r.errors or {}, lib.KINDS) or "-"
end

-- Whether a hold record counts: it held requests and none failed.
local function hold_ok(r) return hold_errors(r) == "-" end

local function report_hold(run, out)
    if not heading(run, out, "hold") then return end
    for _, r in ipairs(run.hold) do
        local function kb(b)
            if b == nil or r.held == 0 or not hold_ok(r) then return "-" end   -- none held, or they failed
            return b >= 1048576 and ("%.2f MB"):format(b / 1048576) or ("%.2f KB"):format(b / 1024)
        end
        out(("| %s | %s / %s | %s | %s | %.1f → %.1f MB | %s | %s | %s | %s |"):format(LABEL[r.server] or r.server,
            lib.num(r.held), lib.num(r.wanted), lib.num(r.conns), lib.num(r.nproc), r.rss0_kb / 1024,
            r.rss_kb / 1024, kb(r.rss_growth_b), kb(r.pss_growth_b), kb(r.rss_total_b), hold_errors(r)))
    end
    out("")
end

-- "met" or "missed" (not measured when v is nil).
local function verdict(v, op, limit)
    if v == nil then return "not measured" end
    local ok
    if op == ">=" then ok = v >= limit else ok = v <= limit end
    return ok and "**met**" or "**missed**"
end

local function report_targets(run, out)
    local function row(...) out(("| %s | %s | %s | %s |"):format(...)) end
    out("### Targets (afcgi, one process)")
    out("")
    out("| target | wanted | measured | verdict |")
    out("| --- | --- | --- | --- |")
    local d = run.direct
    local function dmed(shape, server, field)
        return lib.median(lib.where(d, { workload = "hello", shape = shape, server = server }), field)
    end
    local a256, a256cpu = dmed("1x256", "afcgi", "ok_per_s"), dmed("1x256", "afcgi", "cpu_us")
    local a64 = dmed("64x1", "afcgi", "ok_per_s")
    local c64, c64cpu = dmed("64x1", "c", "ok_per_s"), dmed("64x1", "c", "cpu_us")
    local function ratio(a, b) return a and b and b ~= 0 and a / b or nil end
    local function x(r) return r and ("%.2fx"):format(r) or "-" end
    local function cpu(v) return v and ("%.2f"):format(v) or "-" end
    local r1, r2, r3 = ratio(a256, c64), ratio(a256cpu, c64cpu), ratio(a64, c64)
    -- a verdict on the ratio as printed, as the table shows it
    local function shown(r) return r and tonumber(("%.2f"):format(r)) end
    row("direct 1x256 req/s vs libfcgi C 64x1", ">= 1.5x", ("%s (%s vs %s)"):format(x(r1), lib.num(a256), lib.num(c64)),
        verdict(shown(r1), ">=", 1.5))
    row("direct 1x256 CPU/req vs libfcgi C 64x1", "<= 0.5x",
        ("%s (%s vs %s µs)"):format(x(r2), cpu(a256cpu), cpu(c64cpu)), verdict(shown(r2), "<=", 0.5))
    row("direct 64x1 req/s vs libfcgi C 64x1", ">= 1.0x", ("%s (%s vs %s)"):format(x(r3), lib.num(a64), lib.num(c64)),
        verdict(shown(r3), ">=", 1.0))
    local h = run.http
    local ngx_a = lib.median(lib.where(h, { conc = 64, server = "afcgi" }), "ok_per_s")
    local ngx_c = lib.median(lib.where(h, { conc = 64, server = "c" }), "ok_per_s")
    local ngx_p99 = lib.median(lib.where(h, { conc = 64, server = "afcgi" }), "p99_ms")
    r1 = ratio(ngx_a, ngx_c)
    row("behind nginx, wrk -c64, req/s vs libfcgi C", ">= 1.1x", ("%s (%s vs %s)"):format(x(r1), lib.num(ngx_a),
        lib.num(ngx_c)), verdict(shown(r1), ">=", 1.1))
    row("behind nginx, wrk -c64, p99", "<= 5 ms", lib.num(ngx_p99) .. " ms", verdict(ngx_p99, "<=", 5))
    -- the largest hold afcgi did without errors
    local n100, big
    for _, r in ipairs(run.hold) do
        if r.server == "afcgi" and hold_ok(r) then n100 = r.wanted end
    end
    for _, r in ipairs(run.hold) do
        if r.server == "afcgi" and r.wanted == n100 and hold_ok(r) then big = r end
    end
    local mem = big and big.rss_growth_b
    row("RSS per waiting request, 100,000 in flight", "<= 2048 B",
        ("%s B (%s held of %s)"):format(mem and ("%.0f"):format(mem) or "-", big and lib.num(big.held) or "0",
                                        n100 and lib.num(n100) or "0"),
        (n100 == 100000 and big and big.held == 100000) and verdict(mem, "<=", 2048) or "not measured at 100,000")
    local ir = run.instructions[1]
    row("user-space instructions per hello (callgrind, difference of two runs)", "<= 10,000",
        ir and ("%.0f"):format(ir.per_request) or "-", verdict(ir and ir.per_request, "<=", 10000))
    local sc = lib.where(run.syscalls, { server = "afcgi", shape = "1x256" })[1]
    row("system calls per request at 1x256 (strace -c -f)", "<= 0.2",
        sc and ("%.3f"):format(sc.per_request) or "-", verdict(sc and sc.per_request, "<=", 0.2))
    out("")
    if #run.instructions + #run.syscalls > 0 then
        local counts = {}
        for _, r in ipairs(run.instructions) do
            counts[#counts + 1] = ("callgrind Ir %d after %d requests, %d after %d; "):format(r.ir1, r.n1, r.ir2, r.n2)
        end
        for _, r in ipairs(run.syscalls) do
            counts[#counts + 1] = ("%s %s: %d calls for %d requests (%.3f/req); "):format(r.server, r.shape,
                r.calls, r.n, r.per_request)
        end
        out("Counts: " .. table.concat(counts))
        out("")
    end
end

-- run DIR: the Markdown tables of the run in DIR.
function M.tables(dir)
    local run = load_run(dir)
    local lines = {}
    local function out(s) lines[#lines + 1] = s end
    local st = run.settings
    out(("## Results (%s run, started %s)"):format(st.mode, st.started))
    out("")
    local sweep = st.sweep ~= st.duration and (" (%s through nginx)"):format(st.sweep) or ""
    out(("Medians of %s side-by-side repetitions (min–max in brackets), %s each%s, on %s cores shared with other"
         .. " work; load average at start/end: %s / %s."):format(lib.num(st.reps), st.duration, sweep, lib.nproc(),
                                                               st.load_at_start, run.ending.load_at_end or ""))
    out("")
    report_direct(run, out)
    report_http(run, out)
    report_hold(run, out)
    report_targets(run, out)
    out("Versions: " .. table.concat(run.versions.lines, "; "))
    io.write(table.concat(lines, "\n"), "\n")
end

-- A gnuplot data block: name, rows (lists of numbers).
local function datablock(name, rows)
    local lines = { "$" .. name .. " << EOD" }
    for _, r in ipairs(rows) do
        local f = {}
        for i, v in ipairs(r) do f[i] = type(v) == "number" and lib.num(v) or tostring(v) end
        lines[#lines + 1] = table.concat(f, " ")
    end
    lines[#lines + 1] = "EOD"
    return table.concat(lines, "\n")
end

-- A/B as "0.75x", or as "1/40" when under 0.5 (small ratios stay readable).
local function ratio_frac(a, b)
    if not a or not b or a == 0 or b == 0 then return "-" end
    if a / b < 0.5 then return ("1/%.0f"):format(b / a) end
    return ("%.2fx"):format(a / b)
end

local PNG = [[set terminal pngcairo size 1000,720 font "DejaVu Sans,11"]]

local function plot_http(run, dir, parts)
    local h = run.http
    local servers = {}
    for i, s in ipairs(run.servers) do servers[i] = s end
    servers[#servers + 1] = "nginx-lua"
    local concs = {}
    for _, r in ipairs(distinct(h, "conc")) do concs[#concs + 1] = r.conc end
    table.sort(concs)
    local plotted = {}
    for _, s in ipairs(servers) do
        local rows = {}
        for _, c in ipairs(concs) do
            local sel = lib.where(h, { conc = c, server = s })
            if #sel > 0 then rows[#rows + 1] = { c, lib.median(sel, "ok_per_s"), lib.median(sel, "p99_ms") } end
        end
        if #rows > 0 then
            parts[#parts + 1] = datablock("http_" .. s:gsub("%W", "_"), rows)
            plotted[#plotted + 1] = s
        end
    end
    if #plotted == 0 then return end
    -- the key title of server s: its label and afcgi/s of a figure at c=64
    local function title(s, field, metric)
        if s == "afcgi" then return LABEL[s] end
        local a = lib.median(lib.where(h, { conc = 64, server = "afcgi" }), field)
        local p = lib.median(lib.where(h, { conc = 64, server = s }), field)
        return ("%s  (%s afcgi/peer at c=64: %s)"):format(LABEL[s] or s, metric, lib.ratio(a, p))
    end
    for _, p in ipairs({ { "Throughput", 2, "http-throughput.png", "requests/s", false, "ok_per_s", "req/s" },
                         { "p99 latency", 3, "http-p99.png", "p99 latency (ms)", true, "p99_ms", "p99" } }) do
        local what, col, file, ylabel, logy, field, metric = p[1], p[2], p[3], p[4], p[5], p[6], p[7]
        local plots = {}
        for _, s in ipairs(plotted) do
            plots[#plots + 1] = ("$http_%s using 1:%d with linespoints lw 2 pt 7 title '%s'"):format(
                s:gsub("%W", "_"), col, title(s, field, metric))
        end
        parts[#parts + 1] = table.concat({
            "reset", PNG, ("set output '%s/%s'"):format(dir, file),
            ('set title "%s through nginx (wrk, GET /hello), medians of %s runs\\n%s cores, %s; afcgi is one process"')
                :format(what, lib.num(run.settings.reps), lib.nproc(), os.date("!%Y-%m-%d")),
            "set xlabel 'concurrent connections (wrk -c)'", ("set ylabel '%s'"):format(ylabel),
            "set logscale x 2", logy and "set logscale y 10" or "", "set grid",
            "set key below left vertical Left reverse maxcols 1 noenhanced",
            "plot " .. table.concat(plots, ", "),
        }, "\n")
    end
end

local function plot_hold(run, dir, parts)
    if #run.hold == 0 then return end
    -- afcgi's RSS per waiting request at its largest hold, against each peer's at its own
    local function last_total(s)
        local v
        for _, r in ipairs(run.hold) do if r.server == s and hold_ok(r) then v = r.rss_total_b end end
        return v or 0
    end
    local amax = last_total("afcgi")
    local plots = {}
    for _, s in ipairs(run.servers) do
        local rows = {}
        for _, r in ipairs(run.hold) do
            if r.server == s and r.held > 0 and hold_ok(r) then
                rows[#rows + 1] = { r.held, ("%.2f"):format(r.rss_kb / 1024) }
            end
        end
        if #rows > 0 then
            local name = "hold_" .. s:gsub("%W", "_")
            parts[#parts + 1] = datablock(name, rows)
            local t = LABEL[s] or s
            if s ~= "afcgi" then
                t = t .. ("  (RSS per waiting request, afcgi/peer = %s)"):format(ratio_frac(amax, last_total(s)))
            end
            if not multiplexes(s) then t = t .. ", holds at most " .. lib.num(rows[#rows][1]) end
            plots[#plots + 1] = ("$%s using 1:2 with linespoints lw 2 pt 7 ps 1.5 title '%s'"):format(name, t)
        end
    end
    parts[#parts + 1] = table.concat({
        "reset", PNG, ("set output '%s/hold-memory.png'"):format(dir),
        [[set title "Memory while requests wait (long-poll, handler sleeps 10 s)\n]]
            .. [[RSS summed over the server's processes; each server at the most it can hold"]],
        "set xlabel 'requests in flight'", "set ylabel 'RSS while waiting (MB)'",
        "set logscale x 10", "set logscale y 10", "set format x '%.0f'", "set grid",
        "set key below left vertical Left reverse maxcols 1 noenhanced",
        "plot " .. table.concat(plots, ", "),
    }, "\n")
end

-- plots DIR PLOTS: the gnuplot script drawing http-throughput.png,
-- http-p99.png and hold-memory.png into PLOTS from the run in DIR.
function M.plots(dir, plots_dir)
    local run = load_run(dir)
    local parts = {}
    plot_http(run, plots_dir, parts)
    plot_hold(run, plots_dir, parts)
    io.write(table.concat(parts, "\n"), "\n")
end

-- settings DIR: the run's settings as shell assignments (for --report).
function M.settings(dir)
    local st = load_run(dir).settings
    local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
    io.write(("REPS=%s DURATION=%s SWEEP_DURATION=%s RUN_MODE=%s PEERS=%s NGINX_WORKERS=%s\n"):format(
        q(lib.num(st.reps)), q(st.duration), q(st.sweep), q(st.mode), q(table.concat(st.peers, ",")),
        q(lib.num(st.nginx_workers))))
end

return M
