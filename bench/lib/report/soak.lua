-- bench/lib/report/soak.lua: `report.lua soak WORK OUT`, the report of a
-- bench/soak run, and `report.lua soak-plot OUT`, the gnuplot script of its
-- plot.
--
-- Reads the samples and reloads (OUT/soak.jsonl: "sample" records t,
-- rss_kb, fds, gen, the one at t = 0 the server before any traffic;
-- "reload" records t, gen, version, seconds), the run's records
-- (WORK/run.jsonl: "run" with its figures, "client" and "exit" for each
-- client, "problem" for each failure bench/soak noted while running), the
-- clients' JSON reports and the server log; prints the series (one line per
-- 10 s), the summary, the verdict. Returns 0 on PASS, 1 on FAIL.
local cjson = require "cjson"
local lib = require "report.lib"

local M = {}

local function lines(path)
    local f = io.open(path)
    if not f then return function() return nil end end
    return coroutine.wrap(function()
        for l in f:lines() do coroutine.yield(l) end
        f:close()
    end)
end

local slurp = lib.read_file

function M.report(work, out_dir)
    local run = lib.read_jsonl(work .. "/run.jsonl")
    local env = lib.where(run, { kind = "run" })[1] or {}
    local duration = tonumber(env.duration)
    local soak = lib.read_jsonl(out_dir .. "/soak.jsonl")

    -- Samples ----------------------------------------------------------------------

    local samples = {}          -- under traffic: time 1..duration
    local base
    for _, r in ipairs(lib.where(soak, { kind = "sample" })) do
        local s = { t = r.t, rss = r.rss_kb, fds = r.fds, gen = r.gen }
        if s.t == 0 then base = s elseif s.rss and s.fds then samples[#samples + 1] = s end
    end

    local function median(v)
        if #v == 0 then return nil end
        local c = {}
        for i = 1, #v do c[i] = v[i] end
        table.sort(c)
        local n = #c
        return n % 2 == 1 and c[(n + 1) / 2] or (c[n / 2] + c[n / 2 + 1]) / 2
    end

    local function stats(field, from, to)
        local v = {}
        for _, s in ipairs(samples) do
            if s.t > from and s.t <= to then v[#v + 1] = s[field] end
        end
        local mn, mx = math.huge, -math.huge
        for _, x in ipairs(v) do mn = math.min(mn, x); mx = math.max(mx, x) end
        return { n = #v, min = #v > 0 and mn or nil, max = #v > 0 and mx or nil, median = median(v) }
    end

    local function mib(kb) return kb and ("%.1f"):format(kb / 1024) or "-" end
    local function num(x) return x and (x == math.floor(x) and ("%d"):format(x) or ("%.1f"):format(x)) or "-" end

    local out = {}
    local function say(fmt, ...) out[#out + 1] = fmt:format(...) end

    say("afcgi soak (%s): %d s of mixed traffic, reload every %s s", env.revision or "?", duration, env.reload_every)
    say("")
    say("series (every 10 s; RSS in MiB):")
    say("  %6s  %8s  %5s  %4s", "time", "rss_MiB", "fds", "gen")
    if base then say("  %5ds  %8s  %5d  %4d   (before the traffic)", 0, mib(base.rss), base.fds, base.gen) end
    for _, s in ipairs(samples) do
        if s.t % 10 == 0 then say("  %5ds  %8s  %5d  %4d", s.t, mib(s.rss), s.fds, s.gen) end
    end

    local all_rss, all_fds = stats("rss", 0, duration), stats("fds", 0, duration)
    local last = samples[#samples]
    local third = duration / 3
    local r2, r3 = stats("rss", third, 2 * third), stats("rss", 2 * third, duration)
    local f2, f3 = stats("fds", third, 2 * third), stats("fds", 2 * third, duration)

    -- Least-squares slope of RSS over the last two thirds, in KiB per minute.
    local function slope(field)
        local n, sx, sy, sxx, sxy = 0, 0, 0, 0, 0
        for _, s in ipairs(samples) do
            if s.t > third then
                n = n + 1
                sx, sy = sx + s.t, sy + s[field]
                sxx, sxy = sxx + s.t * s.t, sxy + s.t * s[field]
            end
        end
        local d = n * sxx - sx * sx
        if n < 2 or d == 0 then return nil end
        return (n * sxy - sx * sy) / d * 60
    end

    say("")
    say("%-5s  %9s  %9s  %9s  %9s  %9s  %9s", "", "start", "min", "median", "max", "end", "idle")
    say("%-5s  %9s  %9s  %9s  %9s  %9s  %9s", "RSS", mib(base and base.rss), mib(all_rss.min),
        mib(all_rss.median), mib(all_rss.max), mib(last and last.rss), mib(env.idle_rss))
    say("%-5s  %9s  %9s  %9s  %9s  %9s  %9s", "fds", num(base and base.fds), num(all_fds.min),
        num(all_fds.median), num(all_fds.max), num(last and last.fds), num(env.idle_fds))
    say("  (RSS in MiB; start = before the traffic, end = last sample under traffic,")
    say("   idle = after every client stopped)")

    -- Verdict pieces ---------------------------------------------------------------

    local failures = {}
    local function fail(fmt, ...) failures[#failures + 1] = fmt:format(...) end

    say("")
    say("flat: median of the last third (%d-%d s) against the second third (%d-%d s)",
        math.floor(2 * third), duration, math.floor(third), math.floor(2 * third))
    if r2.median and r3.median then
        local lim = math.max(0.05 * r2.median, 1024)
        local d = r3.median - r2.median
        local ok = d <= lim
        say("  RSS  %s -> %s MiB: %+.2f MiB (%+.1f%%), limit +%.2f MiB   %s",
            mib(r2.median), mib(r3.median), d / 1024, 100 * d / r2.median, lim / 1024, ok and "PASS" or "FAIL")
        if not ok then fail("RSS grew %+.2f MiB between the second and the last third", d / 1024) end
        local sl = slope("rss")
        if sl then say("       slope over the last two thirds %+.1f KiB/min", sl) end
        lim = math.max(0.10 * f2.median, 4)
        d = f3.median - f2.median
        ok = d <= lim
        say("  fds  %s -> %s: %+.1f, limit +%.1f   %s", num(f2.median), num(f3.median), d, lim,
            ok and "PASS" or "FAIL")
        if not ok then fail("descriptors grew %+.1f between the second and the last third", d) end
    else
        fail("too few samples to judge")
    end
    if base and env.idle_fds then
        local ok = env.idle_fds == base.fds
        say("  fds after the traffic %s, before it %d   %s", num(env.idle_fds), base.fds, ok and "PASS" or "FAIL")
    end

    -- Reloads ----------------------------------------------------------------------

    local reloads, slowest, gen = 0, 0, 1
    for _, r in ipairs(lib.where(soak, { kind = "reload" })) do
        reloads = reloads + 1
        slowest = math.max(slowest, r.seconds or 0)
        gen = r.gen
    end
    local expected_reloads = math.floor((duration - 1) / tonumber(env.reload_every))
    say("")
    say("reloads: %d of %d (generation %d at the end); the new version answered /version within %.0f ms at worst",
        reloads, expected_reloads, gen, slowest * 1000)
    if reloads ~= expected_reloads then fail("%d reloads done, %d planned", reloads, expected_reloads) end

    -- Clients ----------------------------------------------------------------------

    local KINDS = { "connect", "read", "protocol", "status", "body", "timeout", "overloaded" }

    local function errors_text(e, allow)
        local parts = {}
        for _, k in ipairs(KINDS) do
            if (e[k] or 0) > 0 then
                parts[#parts + 1] = ("%s %d%s"):format(k, e[k], allow[k] and " (provoked)" or "")
            end
        end
        return #parts > 0 and table.concat(parts, ", ") or "none"
    end

    local function allowset(s)
        local t = {}
        for k in (s or ""):gmatch("[%w]+") do t[k] = true end
        return t
    end

    say("")
    say("clients (afcgi-bench; ok = valid answers, req/s over the run):")
    say("  %-9s %-56s %10s %8s %8s  %s", "name", "load", "ok", "req/s", "p99 ms", "errors")
    local total_ok, error_requests = 0, 0
    for _, client in ipairs(lib.where(run, { kind = "client" })) do
        local name, load = client.name, client.load
        local allow = allowset(client.allow)
        local text = slurp(work .. "/" .. name .. ".json")
        local ok_json, r = pcall(cjson.decode, text or "")
        local rc = (lib.where(run, { kind = "exit", name = name })[1] or {}).rc
        if not ok_json or type(r) ~= "table" then
            say("  %-9s %-56s  no report (exit status %s): %s", name, load, tostring(rc),
                (slurp(work .. "/" .. name .. ".err") or ""):gsub("\n", " "):sub(1, 120))
            fail("client %s gave no report", name)
        else
            local e = r.errors or {}
            say("  %-9s %-56s %10d %8.0f %8.1f  %s", name, load:sub(1, 56), r.ok, r.ok / r.duration_s,
                r.latency_us.p99 / 1000, errors_text(e, allow))
            total_ok = total_ok + r.ok
            if name == "errors" then error_requests = r.ok end
            for _, k in ipairs(KINDS) do
                if (e[k] or 0) > 0 and not allow[k] then
                    fail("client %s: %d %s errors", name, e[k], k)
                end
            end
            if r.ok == 0 and name ~= "timeouts" then fail("client %s: no valid answer", name) end
            if rc == 2 then fail("client %s: exit status 2 (bad options or unusable target)", name) end
        end
    end

    -- The drop loop: rounds of 200 held long polls dropped with the connections.
    local rounds, held, dropped, drop_errs, drop_ok = 0, 0, 0, {}, 0
    for i = 1, 100000 do
        local text = slurp(("%s/drop.%d.json"):format(work, i))
        if not text then break end
        local okj, r = pcall(cjson.decode, text)
        rounds = rounds + 1
        if okj and type(r) == "table" then
            held = held + (r.held or 0)
            dropped = dropped + (r.in_flight or 0)
            drop_ok = drop_ok + (r.ok or 0)
            for _, k in ipairs(KINDS) do drop_errs[k] = (drop_errs[k] or 0) + ((r.errors or {})[k] or 0) end
        else
            fail("drop round %d gave no report", i)
        end
    end
    say("  %-9s %-56s %10d %8s %8s  %s", "drop", ("%d rounds x --hold 200 -c 4, SIGINT after 1 s"):format(rounds),
        drop_ok, "-", "-", errors_text(drop_errs, {}))
    say("            %d long polls held, %d dropped in flight", held, dropped)
    for _, k in ipairs(KINDS) do
        if drop_errs[k] > 0 then fail("drop loop: %d %s errors", drop_errs[k], k) end
    end
    if rounds == 0 then fail("the drop loop ran no round") end
    say("  total valid answers: %d", total_ok)

    -- Server log -------------------------------------------------------------------

    local levels, deliberate, unexpected, warns = {}, { before = 0, after = 0, thread = 0 }, {}, {}
    for l in lines(work .. "/afcgi.log") do
        local level = l:match("^%S+ %[(%a+)%] afcgi%[")
        if level then
            levels[level] = (levels[level] or 0) + 1
            if level == "error" then
                if l:find("soak: deliberate handler error before headers", 1, true) then
                    deliberate.before = deliberate.before + 1
                elseif l:find("soak: deliberate handler error after headers", 1, true) then
                    deliberate.after = deliberate.after + 1
                elseif l:find("soak: deliberate light thread error", 1, true) then
                    deliberate.thread = deliberate.thread + 1
                else
                    unexpected[#unexpected + 1] = l
                end
            elseif level == "warn" then
                warns[#warns + 1] = l
            end
        end
    end
    say("")
    say("server log: %d [error] (%d deliberate before headers, %d after headers, %d light thread; %d other),",
        levels.error or 0, deliberate.before, deliberate.after, deliberate.thread, #unexpected)
    say("            %d [warn], %d [notice]; /error answered %d times to the errors client",
        levels.warn or 0, levels.notice or 0, error_requests)
    for i = 1, math.min(5, #unexpected) do say("  unexpected: %s", unexpected[i]:sub(1, 300)) end
    for i = 1, math.min(5, #warns) do say("  warn: %s", warns[i]:sub(1, 300)) end
    if #unexpected > 0 then fail("%d unexpected [error] lines in the server log", #unexpected) end
    say("server: %s s of CPU, exit status %s after SIGTERM", env.server_cpu and num(env.server_cpu) or "-",
        env.server_rc and num(env.server_rc) or "-")

    for _, p in ipairs(lib.where(run, { kind = "problem" })) do fail("%s", p.text) end

    say("")
    if #failures == 0 then
        say("PASS")
    else
        for _, f in ipairs(failures) do say("FAIL: %s", f) end
    end
    io.write(table.concat(out, "\n"), "\n")
    return #failures == 0 and 0 or 1
end

-- The gnuplot script of soak.png from OUT/soak.jsonl: the samples and the
-- reloads as data blocks, then bench/soak.d/soak.gp; minutes and every are
-- for its title.
function M.plot(out_dir, soak_gp, minutes, every)
    local soak = lib.read_jsonl(out_dir .. "/soak.jsonl")
    local parts = { "$samples << EOD" }
    for _, r in ipairs(lib.where(soak, { kind = "sample" })) do
        if r.rss_kb and r.fds then parts[#parts + 1] = ("%d %d %d %d"):format(r.t, r.rss_kb, r.fds, r.gen) end
    end
    parts[#parts + 1] = "EOD"
    parts[#parts + 1] = "$reloads << EOD"
    for _, r in ipairs(lib.where(soak, { kind = "reload" })) do
        parts[#parts + 1] = ("%d %d %s"):format(r.t, r.gen, r.version)
    end
    parts[#parts + 1] = "EOD"
    parts[#parts + 1] = ("png = '%s/soak.png'; minutes = '%s'; every = '%s'"):format(out_dir, minutes, every)
    parts[#parts + 1] = ("load '%s'"):format(soak_gp)
    io.write(table.concat(parts, "\n"), "\n")
end

return M
