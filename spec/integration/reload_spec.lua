-- Hot reload (SIGHUP) under load: continuous short requests plus 1,000 long
-- ones in flight across 10 reloads that alternate two versions of the app,
-- on one process and on --workers 2. No request may fail, every answer
-- must come from the code that was current when its request was sent or a
-- later one, a request in flight finishes on the code it began on, and new
-- requests get the new code right after the reload line. The test drives
-- every connection itself (non-blocking reads, one select), and learns the
-- current generation only from the server's "reloaded" log lines.
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local socket = require "socket"
local psignal = require "posix.signal"

local RELOADS = 10
local LONG_CONNS, LONG_PER_ROUND = 10, 100      -- 1,000 long requests in all
local SHORT_CONNS = 8                           -- each keeps one short request going

-- Version "A" serves the odd generations, "B" the even ones. Every answer's
-- last line is "VERSION GEN PID"; /long first sends (flushed) a line
-- "start VERSION GEN PID", then sleeps ?ms= and answers.
local APP = [[
local afcgi = require "afcgi"
local core = require "afcgi.core"
local VERSION = "%s"
local f = assert(io.open("/proc/self/stat"))
local PID = f:read("*l"):match("^(%%d+)")
f:close()
return function(req, res)
    res:header("Content-Type", "text/plain")
    local id = VERSION .. " " .. core.generation .. " " .. PID
    if req.path == "/long" then
        res:write("start ", id, "\n")
        res:flush()
        afcgi.sleep(tonumber(req.query:match("ms=(%%d+)")) / 1000)
    end
    res:write(id)
end
]]

local function version_of(gen) return gen % 2 == 1 and "A" or "B" end

local function app_text(gen) return APP:format(version_of(gen)) end

local BROKEN = "return function(req, res)\n    res:write('never'\nend\n"   -- error on line 3

-- How many lines of srv's log contain text (plain).
local function count_lines(srv, text)
    local n = 0
    for line in srv:log():gmatch("[^\n]*\n") do
        if line:find(text, 1, true) then n = n + 1 end
    end
    return n
end

local function has_pid(list, pid)
    for _, p in ipairs(list) do if p == pid then return true end end
    return false
end

-- Connections read without blocking: records are decoded from each one's
-- own buffer, so many can be served from one select.
local function poll_conns(conns, timeout, on_record)
    local socks, by_sock = {}, {}
    for _, c in ipairs(conns) do
        if not c.closed then socks[#socks + 1] = c.sock; by_sock[c.sock] = c end
    end
    local readable = socket.select(socks, nil, timeout)
    for _, s in ipairs(readable) do
        local c = by_sock[s]
        s:settimeout(0)
        local data, err, partial = s:receive(65536)
        c.rbuf = c.rbuf .. (data or partial or "")
        if err and err ~= "timeout" then c.closed = err end
        local pos = 1
        while true do
            local rec, stop = fc.decode_record(c.rbuf, pos)
            if not rec then break end
            pos = stop
            on_record(c, rec)
        end
        c.rbuf = c.rbuf:sub(pos)
    end
end

-- Runs the whole proof against srv (nworkers: 0 for a single process).
local function reload_under_load(srv, app_path, nworkers)
    local procs = nworkers > 0 and nworkers or 1
    local hups, current, reload_at = 0, 1, {}
    local reloaded = {}                  -- gen -> { pid = true }
    local scanned = srv:mark()
    local errors, results = {}, {}
    local reqs = {}                      -- "conn:id" -> request
    local short_running = true
    local first_new = {}                 -- gen -> seconds from its reload line to a new-code answer
    local conns, long_conns, short_conns = {}, {}, {}

    local function fail(msg)
        if #errors < 20 then errors[#errors + 1] = msg end
        errors.n = (errors.n or 0) + 1
    end

    -- what the server's log says: the generation every process serves
    local function scan_log()
        local log = srv:log()
        local pattern = "afcgi%[(%d+)%]: reloaded [^\n]*: generation (%d+) serves new requests\n"
        for pid, gen in log:sub(scanned + 1):gmatch(pattern) do
            gen = tonumber(gen)
            reloaded[gen] = reloaded[gen] or {}
            reloaded[gen][pid] = true
        end
        scanned = #(log:match("^.*\n") or "")   -- up to the last whole line
        while reloaded[current + 1] do
            local n = 0
            for _ in pairs(reloaded[current + 1]) do n = n + 1 end
            if n < procs then break end
            current = current + 1
            reload_at[current] = socket.gettime()
        end
    end

    local function send(c, kind, uri)
        c.next_id = c.next_id % 65535 + 1
        local key = c.n .. ":" .. c.next_id
        assert(reqs[key] == nil, "request id in use: " .. key)
        reqs[key] = { kind = kind, id = c.next_id, sent_gen = current, sent_at = socket.gettime(),
                      out = {} }
        proc.send(c, c.next_id, uri)
        return reqs[key]
    end

    local function finish(c, key, r, rec)
        reqs[key] = nil
        local stdout = table.concat(r.out)
        local status, _, body = fc.parse_cgi(stdout)
        local ver, gen, pid = body:match("([AB]) (%d+) (%d+)$")
        gen = tonumber(gen)
        local what = ("%s request %s (sent at generation %d)"):format(r.kind, key, r.sent_gen)
        if rec.protocol_status ~= 0 or status ~= 200 or not gen then
            return fail(("%s failed: protocol status %d, HTTP %s, body %q"):format(
                what, rec.protocol_status, tostring(status), body:sub(1, 100)))
        end
        if gen < r.sent_gen then fail(what .. " answered by older generation " .. gen) end
        if gen > hups + 1 then fail(what .. " answered by generation " .. gen .. " not loaded yet") end
        if ver ~= version_of(gen) then fail(what .. ": generation " .. gen .. " ran version " .. ver) end
        if r.kind == "long" then
            local sver, sgen = body:match("^start ([AB]) (%d+) " .. pid .. "\n")
            if sver ~= ver or tonumber(sgen) ~= gen then
                fail(what .. " began on " .. tostring(sver) .. " " .. tostring(sgen)
                     .. " and ended on " .. ver .. " " .. gen)
            end
            r.newer_current = current > gen  -- a newer generation served new requests meanwhile
        elseif reload_at[gen] and r.sent_at >= reload_at[gen] and not first_new[gen] then
            first_new[gen] = socket.gettime() - reload_at[gen]
        end
        r.gen = gen
        results[#results + 1] = r
        if r.kind == "short" and short_running then send(c, "short", "/short") end
    end

    local function on_record(c, rec)
        local key = c.n .. ":" .. rec.id
        local r = reqs[key]
        if not r then return fail("record of type " .. rec.type .. " for unknown request " .. key) end
        if rec.type == fc.STDOUT then
            r.out[#r.out + 1] = rec.content
            if r.kind == "long" and not r.started and table.concat(r.out):find("\nstart ") then
                r.started = true
            end
        elseif rec.type == fc.END_REQUEST then
            finish(c, key, r, rec)
        end
    end

    local function pump_until(cond, timeout, what)
        local deadline = socket.gettime() + timeout
        while not cond() do
            if socket.gettime() > deadline then
                error(("timed out after %.1f s waiting for %s (%d failures so far: %s)"):format(
                    timeout, what, errors.n or 0, table.concat(errors, "; ")), 2)
            end
            poll_conns(conns, 0.01, on_record)
            scan_log()
            for _, c in ipairs(conns) do
                if c.closed then error("connection " .. c.n .. " closed by the server: " .. c.closed, 2) end
            end
        end
    end

    for i = 1, LONG_CONNS + SHORT_CONNS do
        local c = helpers.connect(srv, nil, { timeout = 10 })
        c.n, c.next_id, c.rbuf = i, 0, ""
        conns[i] = c
        if i <= LONG_CONNS then long_conns[#long_conns + 1] = c else short_conns[#short_conns + 1] = c end
    end
    for _, c in ipairs(short_conns) do send(c, "short", "/short") end

    local long = {}
    for round = 1, RELOADS do
        local batch = {}
        for i = 1, LONG_PER_ROUND do
            local k = #long + 1
            local ms = 1000 + (k * 37) % 1001                -- 1 to 2 s
            local r = send(long_conns[i % LONG_CONNS + 1], "long", "/long?ms=" .. ms)
            long[k], batch[i] = r, r
        end
        pump_until(function()
            for _, r in ipairs(batch) do if not r.started then return false end end
            return true
        end, 20, "round " .. round .. "'s long requests to begin")
        proc.write_file(app_path, app_text(hups + 2))
        hups = hups + 1
        psignal.kill(srv.pid, psignal.SIGHUP)
        pump_until(function() return current == hups + 1 end, 20,
                   "generation " .. (hups + 1) .. " to be logged by every process")
        pump_until(function() return first_new[current] ~= nil end, 5,
                   "a short request sent after the reload line of generation " .. current)
    end
    pump_until(function()
        for _, r in ipairs(long) do if not r.gen then return false end end
        return true
    end, 20, "every long request to end")
    short_running = false
    pump_until(function() return next(reqs) == nil end, 10, "the last short requests")

    assert.same({}, errors, ("%d of %d requests went wrong"):format(errors.n or 0, #results))
    assert.equal(RELOADS + 1, current)
    local shorts, newer = 0, 0
    for _, r in ipairs(results) do if r.kind == "short" then shorts = shorts + 1 end end
    for _, r in ipairs(long) do if r.newer_current then newer = newer + 1 end end
    assert.equal(RELOADS * LONG_PER_ROUND, #long)
    assert.is_true(shorts >= 2 * RELOADS, "only " .. shorts .. " short requests ran")
    -- nearly every long request was still running on old code after the
    -- next reload (all of them, unless the machine is very slow)
    assert.is_true(newer >= 0.9 * #long, ("only %d of %d long requests outlived a reload")
                   :format(newer, #long))
    for gen = 2, RELOADS + 1 do
        assert.is_true(first_new[gen] < 1, ("generation %d served a new request %.3f s after its "
                                            .. "reload line"):format(gen, first_new[gen]))
    end
    -- each old generation is closed once its last request is done
    for gen = 1, RELOADS do
        helpers.wait_until(function()
            return count_lines(srv, "code generation " .. gen .. " closed\n") == procs
        end, 5, "generation " .. gen .. " to be closed in every process")
    end
    return shorts
end

describe("SIGHUP reload", function()
    after_each(helpers.cleanup)

    local function start(nworkers)
        local dir = proc.tmpdir()
        local app = dir .. "/app.lua"
        proc.write_file(app, app_text(1))
        local args = { "--log-level", "debug", "--shutdown-timeout", "10" }
        if nworkers > 0 then
            args[#args + 1] = "--workers"; args[#args + 1] = tostring(nworkers)
        end
        return helpers.start_server(app, { args = args }), app
    end

    it("keeps 1,000 long requests and continuous traffic whole across 10 reloads", function()
        local srv, app = start(0)
        local shorts = reload_under_load(srv, app, 0)
        print(("  single process: %d short requests beside 1,000 long ones"):format(shorts))
    end)

    it("does the same with --workers 2: SIGHUP to the master reloads every worker", function()
        local srv, app = start(2)
        local kids = proc.wait_children(srv.pid, 2)
        local mark = srv:mark()
        local shorts = reload_under_load(srv, app, 2)
        print(("  --workers 2: %d short requests beside 1,000 long ones"):format(shorts))
        local log = srv:log():sub(mark + 1)
        local n = 0
        for _ in log:gmatch("afcgi%[" .. srv.pid .. "%]: SIGHUP: reloading the app in 2 workers\n") do
            n = n + 1
        end
        assert.equal(RELOADS, n)
        for _, k in ipairs(kids) do   -- the same two workers did it all
            assert.matches("afcgi%[" .. k .. "%]: reloaded [^\n]*generation " .. (RELOADS + 1), log)
        end
        assert.same(kids, proc.children(srv.pid))
    end)

    for _, nworkers in ipairs({ 0, 2 }) do
        it(("keeps the old code serving when the new code does not compile%s"):format(
            nworkers > 0 and " (--workers 2)" or ""), function()
            local srv, app = start(nworkers)
            local procs = nworkers > 0 and nworkers or 1
            local c = helpers.connect(srv)
            assert.matches("^A 1 %d+$", c:request(1, "/").body)
            -- a request in flight across the failed reload
            proc.send(c, 2, "/long?ms=300")
            proc.wait_started(c, 2)
            local mark = srv:mark()
            proc.write_file(app, BROKEN)
            psignal.kill(srv.pid, psignal.SIGHUP)
            local fails = {}
            helpers.wait_until(function()
                fails = {}
                for line in srv:log():sub(mark + 1):gmatch("[^\n]*reload failed[^\n]*") do
                    fails[#fails + 1] = line
                end
                return #fails == procs
            end, 10, "a 'reload failed' line from every process")
            for _, line in ipairs(fails) do
                assert.matches("reload failed, generation 1 keeps serving: [^\n]*" .. app:gsub("%p", "%%%0")
                               .. ":3: ", line)
            end
            assert.matches("^start A 1 %d+\nA 1 %d+$", c:read_response(2, 5).body)
            for id = 3, 12 do assert.matches("^A 1 %d+$", c:request(id, "/").body) end
            -- a good file afterwards becomes generation 2
            mark = srv:mark()
            proc.write_file(app, app_text(2))
            psignal.kill(srv.pid, psignal.SIGHUP)
            helpers.wait_until(function()
                return count_lines(srv, "generation 2 serves new requests") == procs
            end, 10, "generation 2 in every process")
            local t = socket.gettime()
            assert.matches("^B 2 %d+$", c:request(13, "/").body)
            assert.is_true(socket.gettime() - t < 1)
        end)
    end

    -- Found here: a worker the master restarted after reloads reported
    -- generation 1 beside siblings at generation N running the same code;
    -- the master now counts reloads and a new worker continues from there.
    it("--workers 2: a worker restarted after reloads carries on the generation number",
       function()
        local srv, app = start(2)
        local kids = proc.wait_children(srv.pid, 2)
        for gen = 2, 3 do
            proc.write_file(app, app_text(gen))
            psignal.kill(srv.pid, psignal.SIGHUP)
            helpers.wait_until(function()
                return count_lines(srv, "generation " .. gen .. " serves new requests") == 2
            end, 10, "generation " .. gen .. " in both workers")
        end
        psignal.kill(kids[1], psignal.SIGKILL)
        local now
        helpers.wait_until(function()
            now = proc.children(srv.pid)
            return #now == 2 and now[1] ~= kids[1] and now[2] ~= kids[1]
        end, 10, "the killed worker to be replaced")
        local fresh = now[1] == kids[2] and now[2] or now[1]
        local answers = {}
        helpers.wait_until(function()      -- until both workers have answered
            local c = helpers.connect(srv, nil, { timeout = 10 })
            local body = c:request(1, "/").body
            c:close()
            local pid = tonumber(body:match(" (%d+)$"))
            answers[pid] = body:match("^(%S+ %d+)")
            return answers[fresh] and answers[kids[2]]
        end, 20, "an answer from each worker, the restarted " .. fresh .. " among them")
        assert.equal("A 3", answers[kids[2]])
        assert.equal("A 3", answers[fresh], "the restarted worker runs the current code, so "
                     .. "it should say generation 3")
    end)

    -- Open (a known limitation, in the README): after a reload that failed
    -- (the old code keeps serving), a worker that dies is restarted from the
    -- file, which does not load: "worker 1 cannot start", exit 2, again with
    -- a growing backoff, until someone fixes the file. The old code keeps
    -- serving only in the workers that survive. Bringing a worker back on the
    -- old code needs a replacement forked from a live worker (its Lua state
    -- holds that code); until then the spec stays pending.
    it("--workers 2: a worker that dies after a failed reload comes back on the code that serves",
       function()
        pending("a replacement worker loads the file on disk; see the README's Limitations")
        local srv, app = start(2)
        local kids = proc.wait_children(srv.pid, 2)
        proc.write_file(app, BROKEN)
        psignal.kill(srv.pid, psignal.SIGHUP)
        helpers.wait_until(function() return count_lines(srv, "reload failed") == 2 end, 10,
                           "both workers to refuse the broken file")
        local mark = srv:mark()
        psignal.kill(kids[1], psignal.SIGKILL)
        srv:wait_log("%(pid " .. kids[1] .. "%) killed by signal 9", 5, mark)
        local answer                       -- from the replacement, once it serves
        local ok = pcall(helpers.wait_until, function()
            local now = proc.children(srv.pid)
            if #now ~= 2 or has_pid(now, kids[1]) then return false end
            local c = helpers.connect(srv, nil, { timeout = 5 })
            local body = c:request(1, "/").body
            c:close()
            if body:match(" (%d+)$") ~= tostring(kids[2]) then answer = body end
            return answer
        end, 5, "the replacement worker to answer")
        assert.is_true(ok, "no replacement served within 5 s; log:\n"
                       .. srv:log():sub(mark + 1):sub(1, 1500))
        assert.matches("^A 1 %d+$", answer)
        assert.equal(0, count_lines(srv, "cannot start"))
    end)
end)
