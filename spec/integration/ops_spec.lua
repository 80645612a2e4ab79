-- What operators run afcgi with: the service manager's notifications
-- (NOTIFY_SOCKET, systemd's Type=notify), the units in examples/systemd,
-- --pid-file, log rotation with the real logrotate on examples/afcgi.logrotate,
-- --ping-path, and the annotated examples/afcgi.conf.
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local psocket = require "posix.sys.socket"
local ppoll = require "posix.poll"
local psignal = require "posix.signal"
local pstat = require "posix.sys.stat"
local pwd = require "posix.pwd"
local unistd = require "posix.unistd"
local socket = require "socket"
local ffi = require "ffi"

ffi.cdef [[
struct afcgi_sockaddr_un { unsigned short family; char path[108]; };
int bind(int fd, const void *addr, unsigned len);
]]

local function escape(s) return (s:gsub("%p", "%%%0")) end

local function slurp(path)
    local f = assert(io.open(path))
    local s = f:read("*a")
    f:close()
    return s
end

-- Under valgrind a worker forked after the switch to another user creates
-- its own log file: with a $VALGRIND_LOGS that user cannot write to, the
-- specs that drop root with workers are left out (as in access_spec).
local function it_root(name, fn)
    if unistd.geteuid() ~= 0 then return pending(name .. " (needs root)") end
    return it(name, fn)
end

local function it_drops_root(name, fn)
    local logs = os.getenv("VALGRIND_LOGS")
    local st = logs and pstat.stat(logs)
    if logs and not (st and math.floor(st.st_mode / 2) % 2 == 1) then
        return pending(name .. " (VALGRIND_LOGS is not writable by other users)")
    end
    return it_root(name, fn)
end

-- A program's exit status and its stdout and stderr together.
local function run(argv, timeout)
    local p = helpers.spawn(argv, { stdout = true })
    local status = p:finish(timeout or 30)
    return status, p.out .. p.text
end

-- A fake service manager: a unix datagram socket at path (or the abstract
-- name "@..."), read as systemd reads $NOTIFY_SOCKET.
local Notify = {}
Notify.__index = Notify

local function notify_socket(name)
    local fd = assert(psocket.socket(psocket.AF_UNIX, psocket.SOCK_DGRAM, 0))
    -- bound through the FFI with the name's own length: luaposix binds all
    -- 108 bytes of sun_path, which for an abstract name is another name
    local path = name:sub(1, 1) == "@" and "\0" .. name:sub(2) or name
    local sa = ffi.new("struct afcgi_sockaddr_un")
    sa.family = psocket.AF_UNIX
    ffi.copy(sa.path, path, #path)
    assert(ffi.C.bind(fd, sa, 2 + #path) == 0, "cannot bind " .. name .. ": errno " .. ffi.errno())
    helpers.defer(function() unistd.close(fd) end)
    return setmetatable({ fd = fd, name = name, seen = {} }, Notify)
end

-- The next datagram, waiting at most timeout seconds (default 10).
function Notify:next(timeout)
    local deadline = socket.gettime() + (timeout or 10)
    while true do
        local left = deadline - socket.gettime()
        if left <= 0 then
            error(("no notification within %s s; had:\n%s"):format(timeout or 10,
                  table.concat(self.seen, "\n")), 2)
        end
        local fds = { [self.fd] = { events = { IN = true } } }
        if (ppoll.poll(fds, math.ceil(left * 1000)) or 0) > 0 then
            local msg = assert(psocket.recv(self.fd, 4096))
            self.seen[#self.seen + 1] = msg
            return msg
        end
    end
end

-- Reads until a message matches pattern; returns it and the list of those
-- before it.
function Notify:wait(pattern, timeout)
    local deadline, before = socket.gettime() + (timeout or 10), {}
    while true do
        local ok, msg = pcall(self.next, self, math.max(0.001, deadline - socket.gettime()))
        if not ok then
            error(("no notification matching %q; had:\n%s"):format(pattern,
                  table.concat(self.seen, "\n")), 2)
        end
        if msg:find(pattern) then return msg, before end
        before[#before + 1] = msg
    end
end

-- What has arrived already (without waiting).
function Notify:drain()
    local out = {}
    while (ppoll.poll({ [self.fd] = { events = { IN = true } } }, 0) or 0) > 0 do
        out[#out + 1] = assert(psocket.recv(self.fd, 4096))
        self.seen[#self.seen + 1] = out[#out]
    end
    return out
end

local names = 0
local function abstract_name()
    names = names + 1
    return ("@afcgi-spec-notify-%d-%d"):format(unistd.getpid(), names)
end

local function count(text, pattern)
    local _, n = text:gsub(pattern, "")
    return n
end

describe("NOTIFY_SOCKET (systemd's Type=notify)", function()
    after_each(helpers.cleanup)

    -- The ops fixture, each load 300 ms, with n's name as NOTIFY_SOCKET
    -- (and the tag file, when given: see the fixture); returns the server
    -- and the file that counts the loads.
    local function start(workers, n, tag)
        local mark = proc.tmpdir() .. "/loaded"
        local args = { "--listen", "127.0.0.1:0", "--shutdown-timeout", "5" }
        if workers > 0 then
            args[#args + 1] = "--workers"; args[#args + 1] = tostring(workers)
        end
        args[#args + 1] = helpers.fixture("ops")
        local srv = helpers.start_afcgi(args, { env = { NOTIFY_SOCKET = n.name,
            AFCGI_SPEC_LOAD_MS = "300", AFCGI_SPEC_MARK = mark, AFCGI_SPEC_TAG = tag } })
        return srv, mark
    end

    for _, workers in ipairs({ 0, 2 }) do
        local what = workers > 0 and " (--workers 2)" or " (one process)"

        it("sends READY=1 once it serves, every worker loaded, then STATUS=" .. what, function()
            local n = notify_socket(proc.tmpdir() .. "/notify.sock")
            local srv, mark = start(workers, n)
            local ready, before = n:wait("^READY=1$")
            assert.same({}, before, "nothing before READY=1")
            assert.equal(ready, n.seen[1])
            -- each load takes 300 ms and the workers start one after the
            -- other: an early READY=1 would find fewer lines here
            assert.equal(math.max(workers, 1), count(slurp(mark), "loaded pid=%d+\n"))
            local status = n:wait("^STATUS=")
            if workers > 0 then
                assert.equal("STATUS=workers up: 2/2, connections: 0, requests in flight: 0",
                             status)
            else
                assert.equal("STATUS=connections: 0, requests in flight: 0", status)
            end
            assert.equal(200, helpers.connect(srv):request(1, "/").status)
            -- a request in flight shows (the workers publish their figures
            -- each second, the master looks each second)
            local c = helpers.connect(srv)
            proc.send(c, 1, "/sleep?ms=60000")
            proc.wait_started(c, 1)
            n:wait("^STATUS=.*requests in flight: 1$", 15)
            c:close()
            n:wait("^STATUS=.*requests in flight: 0$", 15)
            -- rate-limited: a burst of requests is not a burst of STATUS=
            n:drain()
            local t0, k = socket.gettime(), helpers.connect(srv)
            for id = 1, 200 do assert.equal(200, k:request(id, "/").status) end
            k:close()
            local elapsed = socket.gettime() - t0
            local sent = n:drain()
            assert.is_true(#sent <= elapsed / 1 + 2, ("%d notifications in %.1f s:\n%s")
                           :format(#sent, elapsed, table.concat(sent, "\n")))
        end)

        it("sends RELOADING=1, then READY=1 once the reload is done" .. what, function()
            local n = notify_socket(abstract_name())
            local srv = start(workers, n)
            n:wait("^READY=1$")
            local mark = srv:mark()
            psignal.kill(srv.pid, psignal.SIGHUP)
            local reloading, before = n:wait("^RELOADING=1")
            for _, m in ipairs(before) do assert.matches("^STATUS=", m) end
            assert.matches("^RELOADING=1\nMONOTONIC_USEC=%d+$", reloading)
            local _, between = n:wait("^READY=1$", 30)
            assert.same({ "STATUS=reloading the app" }, between)
            -- every process had loaded the new code (300 ms each) by then
            assert.equal(math.max(workers, 1),
                         count(srv:log():sub(mark + 1), "generation 2 serves new requests"))
            assert.matches("^STATUS=", n:next())
        end)

        if workers > 0 then
            it("sends READY=1 after a burst of SIGHUPs once every worker has loaded the last"
               .. what, function()
                local n = notify_socket(abstract_name())
                local tag = proc.tmpdir() .. "/tag"
                proc.write_file(tag, "a")
                local srv, mark = start(workers, n, tag)
                n:wait("^READY=1$")
                local starts = function(t)
                    return count(slurp(mark), "start pid=%d+ tag=" .. t .. "\n")
                end
                proc.write_file(tag, "b")
                psignal.kill(srv.pid, psignal.SIGHUP)
                -- every worker is inside the reload that read "b" (300 ms)
                helpers.wait_until(function() return starts("b") == workers end, 30,
                                   "every worker loading b")
                proc.write_file(tag, "c")
                psignal.kill(srv.pid, psignal.SIGHUP)
                psignal.kill(srv.pid, psignal.SIGHUP)
                n:wait("^READY=1$", 60)
                -- by then each worker's last load is one that read "c" (the
                -- two SIGHUPs it had queued load once); READY=1 after the
                -- loads of "b" would find the workers' last loads at "b"
                local last = {}
                for pid, t in slurp(mark):gmatch("loaded pid=(%d+) tag=(%a)\n") do last[pid] = t end
                local pids = 0
                for pid, t in pairs(last) do
                    pids = pids + 1
                    assert.equal("c", t, "the last load of worker " .. pid)
                end
                assert.equal(workers, pids)
                assert.equal(200, helpers.connect(srv):request(1, "/").status)
            end)
        end

        it("sends STOPPING=1 when SIGTERM begins the stop" .. what, function()
            local n = notify_socket(proc.tmpdir() .. "/notify.sock")
            local srv = start(workers, n)
            n:wait("^READY=1$")
            local c = helpers.connect(srv)
            proc.send(c, 1, "/sleep?ms=1500")
            proc.wait_started(c, 1)
            psignal.kill(srv.pid, psignal.SIGTERM)
            n:wait("^STOPPING=1$")
            assert.matches("^STATUS=stopping: ", n:next())
            local r = c:read_response(1, 15)     -- the request in flight still finishes
            assert.matches(" started done$", r.body)
            srv:stop_ok(false, 15)
        end)
    end

    it("speaks to an abstract socket name and keeps NOTIFY_SOCKET from the handlers", function()
        local n = notify_socket(abstract_name())
        local srv = start(0, n)
        assert.equal("READY=1", n:next())
        assert.equal("unset", helpers.connect(srv):request(1, "/notify").body)
    end)

    it("warns once about a NOTIFY_SOCKET nobody listens on, and serves", function()
        local path = proc.tmpdir() .. "/nobody-here"
        local srv = helpers.start_server("ops", { env = { NOTIFY_SOCKET = path } })
        srv:wait_log("cannot notify the service manager on NOTIFY_SOCKET", 10)
        psignal.kill(srv.pid, psignal.SIGHUP)       -- more to say, still unheard
        srv:wait_log("serves new requests", 10)
        assert.equal(1, count(srv:log(), "cannot notify the service manager"))
        assert.equal(200, helpers.connect(srv):request(1, "/").status)
    end)

    it("logs a NOTIFY_SOCKET that is no unix socket and serves without it", function()
        local srv = helpers.start_server("ops", { env = { NOTIFY_SOCKET = "vsock:2:1234" } })
        assert.matches("NOTIFY_SOCKET=vsock:2:1234 is not a unix socket path or abstract name",
                       srv:log())
        assert.equal(200, helpers.connect(srv):request(1, "/").status)
    end)
end)

describe("examples/systemd", function()
    after_each(helpers.cleanup)

    local UNITS = { "afcgi.socket", "afcgi.service", "afcgi@.socket", "afcgi@.service" }
    local have = os.execute("command -v systemd-analyze >/dev/null 2>&1")
    local it_verifies = (have == true or have == 0) and it
        or function(name) pending(name .. " (no systemd-analyze here)") end

    it("has Type=notify services started from the sockets", function()
        for _, u in ipairs({ "afcgi.service", "afcgi@.service" }) do
            local text = slurp("examples/systemd/" .. u)
            assert.matches("\nType=notify\n", text, u)
            assert.matches("\nExecReload=/bin/kill %-HUP %$MAINPID\n", text, u)
            assert.matches("\nKillMode=mixed\n", text, u)
            assert.matches("\nRequires=afcgi@?%%?i?%.socket\n", text, u)
        end
    end)

    it_verifies("pass systemd-analyze verify (with the built binary as ExecStart)", function()
        local dir = proc.tmpdir()
        for _, u in ipairs(UNITS) do
            local text = slurp("examples/systemd/" .. u)
            if u:find("service$") then   -- the path substituted here
                assert.matches("\nExecStart=/usr/local/bin/afcgi ", text, u)
            end
            proc.write_file(dir .. "/" .. u, (text:gsub("/usr/local/bin/afcgi", helpers.bin())))
        end
        for _, set in ipairs({ { "afcgi.socket", "afcgi.service" },
                               { "afcgi@demo.socket", "afcgi@demo.service" } }) do
            local argv = { "systemd-analyze", "verify", "--man=no" }
            for _, u in ipairs(set) do argv[#argv + 1] = dir .. "/" .. u end
            local status, out = run(argv)
            assert.equal(0, status, out)
            assert.equal("", out, "systemd-analyze warns")
        end
        -- and it would say so: a unit with a mistake fails or warns
        proc.write_file(dir .. "/afcgi.service",
                        slurp(dir .. "/afcgi.service"):gsub("Type=notify", "Type=notified"))
        local _, out = run({ "systemd-analyze", "verify", "--man=no", dir .. "/afcgi.service" })
        assert.matches("notified", out)
    end)
end)

describe("--pid-file", function()
    after_each(helpers.cleanup)

    it("holds the master's pid while it runs and is removed at exit", function()
        local path = proc.tmpdir() .. "/afcgi.pid"
        local srv = helpers.start_server("lifecycle", { args = { "--workers", "2",
                                                                 "--pid-file", path } })
        assert.equal(srv.pid .. "\n", slurp(path))
        proc.wait_children(srv.pid, 2)
        srv:stop_ok()
        assert.is_nil(pstat.stat(path), "the pid file is still there")
    end)

    it("replaces a stale one", function()
        local path = proc.tmpdir() .. "/afcgi.pid"
        proc.write_file(path, "999999999\nmore\n")
        local srv = helpers.start_server("lifecycle", { args = { "--pid-file", path } })
        assert.equal(srv.pid .. "\n", slurp(path))
    end)

    it("is a clear error when it cannot be written", function()
        local path = proc.tmpdir() .. "/no/such/dir/afcgi.pid"
        local status, stderr = helpers.run_cli({ "--listen", "127.0.0.1:0", "--pid-file", path,
                                                 helpers.fixture("lifecycle") })
        assert.equal(2, status)
        assert.equal("afcgi: cannot write --pid-file " .. path .. ": No such file or directory\n",
                     stderr)
    end)

    it_root("is emptied at exit when --user may not remove it from root's directory", function()
        local dir = proc.tmpdir()
        assert(pstat.chmod(dir, tonumber("755", 8)))
        local path = dir .. "/afcgi.pid"
        local srv = helpers.start_server("lifecycle", { args = { "--user", "nobody",
                                                                 "--pid-file", path } })
        assert.equal(srv.pid .. "\n", slurp(path))
        srv:stop_ok()
        assert.equal("", slurp(path), "a stale pid is left to signal")
        assert.matches("cannot remove %-%-pid%-file " .. escape(path)
                       .. " %(Permission denied%): emptied it instead", srv:log())
    end)
end)

describe("examples/afcgi.logrotate", function()
    after_each(helpers.cleanup)

    local have = os.execute("command -v logrotate >/dev/null 2>&1")
    local it_rotates = (have == true or have == 0) and it_drops_root
        or function(name) pending(name .. " (no logrotate: make deps installs it)") end

    it_rotates("rotates the logs of --user nobody in root's directory; new lines land in the "
               .. "new files", function()
        local dir = proc.tmpdir()
        assert(pstat.chmod(dir, tonumber("755", 8)))        -- nobody reaches its logs
        local logs, run_dir = dir .. "/log", dir .. "/run"
        assert(pstat.mkdir(logs, tonumber("755", 8)))       -- root's, as /var/log/afcgi
        assert(pstat.mkdir(run_dir, tonumber("755", 8)))
        local elog, alog, pidf = logs .. "/error.log", logs .. "/access.log", run_dir .. "/afcgi.pid"
        local srv = helpers.start_afcgi({ "--listen", "127.0.0.1:0", "--workers", "2",
            "--user", "nobody", "--group", "nogroup", "--error-log", elog, "--access-log", alog,
            "--pid-file", pidf, "--shutdown-timeout", "3", helpers.fixture("lifecycle") },
            { ready_file = elog, manual = true })
        local pids = proc.wait_children(srv.pid, 2)
        local c = helpers.connect(srv)
        assert.equal(200, c:request(1, "/?before").status)
        helpers.wait_until(function() return slurp(alog):find("GET /?before ", 1, true) end, 5,
                           "the access line of /?before")

        local conf = slurp("examples/afcgi.logrotate")
            :gsub("/var/log/afcgi", logs)
            :gsub("/run/afcgi", run_dir .. "/afcgi")
            :gsub("www%-data adm", "nobody nogroup")
        assert.matches(escape(logs) .. "/%*%.log {", conf)
        proc.write_file(dir .. "/logrotate.conf", conf)
        local status, out = run({ "logrotate", "-v", "-f", "-s", dir .. "/state",
                                  dir .. "/logrotate.conf" })
        assert.equal(0, status, out)
        assert.matches("GET /%?before ", slurp(alog .. ".1"))
        -- the master and both workers reopened, into the file logrotate made
        helpers.wait_until(function()
            return count(slurp(elog), "SIGUSR1: reopened the log files") == 3
        end, 15, "three reopen lines in the new " .. elog)
        for _, pid in ipairs({ srv.pid, pids[1], pids[2] }) do
            assert.matches("afcgi%[" .. pid .. "%]: SIGUSR1: reopened the log files", slurp(elog))
        end
        local nobody = pwd.getpwnam("nobody")
        assert.equal(nobody.pw_uid, pstat.stat(alog).st_uid)
        for id = 2, 11 do     -- new connections: whichever worker takes them
            assert.equal(200, helpers.connect(srv):request(id, "/?after" .. id).status)
        end
        helpers.wait_until(function()
            return count(slurp(alog), "GET /%?after%d+ ") == 10
        end, 5, "ten access lines in the new " .. alog)
        assert.is_nil(slurp(alog .. ".1"):find("after", 1, true))
        assert.is_nil(slurp(alog):find("before", 1, true))
        assert.is_nil(slurp(elog):find("old file", 1, true), slurp(elog))
        assert.matches("afcgi%[" .. srv.pid .. "%]: ready, listening", slurp(elog .. ".1"))
        c:close()
        srv:stop_ok(nil, nil, function() return slurp(elog) end)
        assert.equal("", slurp(pidf))   -- nobody may not remove it from root's directory
    end)
end)

describe("--ping-path", function()
    after_each(helpers.cleanup)

    it("answers 200 pong in one process, and leaves other paths to the app", function()
        local srv = helpers.start_server("lifecycle", { args = { "--ping-path", "/ping" } })
        local c = helpers.connect(srv)
        local r = c:request(1, "/ping")
        assert.equal(200, r.status)
        assert.equal("pong", r.body)
        assert.equal("text/plain", r.headers["content-type"])
        assert.matches("^pid=%d+ gen=1$", c:request(2, "/ping/more").body)
        assert.matches("^pid=%d+ gen=1$", c:request(3, "/").body)
    end)

    it("answers 503 while a worker is missing, 200 pong once it is back", function()
        local dir = proc.tmpdir()
        local app = dir .. "/app.lua"
        local GOOD = ("return dofile(%q)\n"):format(helpers.fixture("lifecycle"))
        proc.write_file(app, GOOD)
        local srv = helpers.start_server(app, { args = { "--workers", "2", "--ping-path", "/ping" } })
        local function ping()
            local c = helpers.connect(srv, nil, { timeout = 10 })
            local r = c:request(1, "/ping")
            c:close()
            return r
        end
        for _ = 1, 4 do
            local r = ping()
            assert.equal(200, r.status)
            assert.equal("pong", r.body)
        end
        -- a worker that dies cannot come back while the file does not load
        local kids = proc.wait_children(srv.pid, 2)
        proc.write_file(app, "return {\n")
        local mark = srv:mark()
        psignal.kill(kids[1], psignal.SIGKILL)
        srv:wait_log("afcgi%[" .. srv.pid .. "%]: worker %d %(pid %d+%) cannot start: .*app%.lua", 10, mark)
        local r = ping()            -- the other worker answers
        assert.equal(503, r.status)
        assert.equal("1 of 2 workers up\n", r.body)
        proc.write_file(app, GOOD)
        helpers.wait_until(function() return ping().status == 200 end, 30,
                           "the ping to answer 200 again")
        assert.equal(2, #proc.wait_children(srv.pid, 2))
    end)

    it("counts worker numbers, not processes: a retiring worker does not cover a missing one",
       function()
        local dir = proc.tmpdir()
        local app = dir .. "/app.lua"
        proc.write_file(app, ("return dofile(%q)\n"):format(helpers.fixture("lifecycle")))
        local srv = helpers.start_server(app, { args = { "--workers", "2", "--ping-path", "/ping",
                                                         "--worker-max-requests", "1" } })
        local kids = proc.wait_children(srv.pid, 2)
        local mark = srv:mark()
        -- one worker's first request asks for its replacement; still in
        -- flight, it keeps the old process up (retiring) beside the new one
        local c = helpers.connect(srv, nil, { timeout = 10 })
        c:begin(1)
        c:params(1, fc.cgi_params("GET", "/sleep?ms=60000"))
        c:stdin(1, "")
        local out = c:read_matching(function(rec) return rec.type == fc.STDOUT and rec.id == 1 end,
                                    10, "the first part of the answer").content
        local old = tonumber(out:match("pid=(%d+)"))
        srv:wait_log("worker %d %(pid %d+%) ready: pid " .. old .. " retires", 30, mark)
        -- the other worker dies and cannot come back while the file does not load
        local other = kids[1] == old and kids[2] or kids[1]
        proc.write_file(app, "return {\n")
        psignal.kill(other, psignal.SIGKILL)
        srv:wait_log("afcgi%[" .. srv.pid .. "%]: worker %d %(pid %d+%) cannot start: .*app%.lua",
                     10, mark)
        local p = helpers.connect(srv, nil, { timeout = 10 })
        local r = p:request(1, "/ping")
        assert.equal(503, r.status)
        assert.equal("1 of 2 workers up\n", r.body)
    end)
end)

describe("examples/afcgi.conf", function()
    after_each(helpers.cleanup)

    local CONF = "examples/afcgi.conf"

    -- The option names --help lists (but --config, --help, --version).
    local function help_options()
        local status, _, out = helpers.run_cli({ "--help" })
        assert.equal(0, status)
        local opts = {}
        for name in out:gmatch("\n  [%s%-%a,]*%-%-([%w%-]+)") do
            if name ~= "config" and name ~= "help" and name ~= "version" then
                opts[#opts + 1] = name
            end
        end
        assert.is_true(#opts > 20, "too few options parsed from --help:\n" .. out)
        return opts
    end

    -- The file with its paths in dir: /var/log/afcgi, /run and /etc/afcgi
    -- there. With uncomment, the settings shown commented out are set too.
    local function conf_in(dir, uncomment)
        local text = slurp(CONF)
        if uncomment then
            text = text:gsub("\n%-%- ([%w_]+ = [^\n]*)", "\n%1")
        end
        text = text:gsub("/var/log/afcgi", dir .. "/log"):gsub("/run/", dir .. "/run/")
            :gsub("/etc/afcgi", dir .. "/etc")
        for _, sub in ipairs({ "/log", "/run", "/etc" }) do
            assert(pstat.mkdir(dir .. sub, tonumber("755", 8)))
        end
        assert(pstat.chmod(dir, tonumber("755", 8)))
        local path = dir .. "/afcgi.conf"
        proc.write_file(path, text)
        return path, text
    end

    it("names every option afcgi --help lists", function()
        local text = slurp(CONF)
        for _, name in ipairs(help_options()) do
            local key = name:gsub("%-", "_")
            assert.is_truthy(text:find("\n" .. key .. " = ", 1, true)
                             or text:find("\n-- " .. key .. " = ", 1, true),
                             CONF .. " does not set " .. key .. " (--" .. name .. ")")
        end
    end)

    it_drops_root("is accepted as it stands, and serves", function()
        local dir = proc.tmpdir()
        local path = conf_in(dir, false)
        local elog = dir .. "/log/error.log"
        -- no listen in the file (the socket unit's): a port of our own
        local srv = helpers.start_afcgi({ "--config", path, "--listen", "127.0.0.1:0",
                                          helpers.fixture("lifecycle") }, { ready_file = elog })
        assert.equal(srv.pid .. "\n", slurp(dir .. "/run/afcgi.pid"))
        local c = helpers.connect(srv)
        assert.equal("pong", c:request(1, "/afcgi-ping").body)
        local st = c:request(2, "/afcgi-status")
        assert.equal(200, st.status)
        assert.equal("application/json", st.headers["content-type"])
        assert.equal(200, c:request(3, "/").status)
        helpers.wait_until(function() return slurp(dir .. "/log/access.log"):find(" GET / 200 ") end,
                           5, "the access line of /")
        local www = pwd.getpwnam("www-data")
        for _, pid in ipairs(proc.children(srv.pid)) do
            assert.equal(tostring(www.pw_uid), proc.status_field(pid, "Uid"):match("^%d+"))
        end
        c:close()
        srv:stop_ok(nil, nil, function() return slurp(elog) end)
    end)

    it_drops_root("is accepted with its commented-out settings set too", function()
        local dir = proc.tmpdir()
        local status, out = run({ "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=afcgi spec CA", "-days", "1",
            "-keyout", dir .. "/key.pem", "-out", dir .. "/ca.pem" })
        assert.equal(0, status, out)
        local path, text = conf_in(dir, true)
        assert.matches("\nlisten = ", text)
        assert.matches("\nresolver = ", text)
        local cert = text:match('\nlua_ssl_trusted_certificate = "([^"]+)"')
        assert(os.rename(dir .. "/ca.pem", cert))
        local elog = dir .. "/log/error.log"
        local srv = helpers.start_afcgi({ "--config", path, helpers.fixture("lifecycle") },
                                        { ready_file = elog })
        local sock = dir .. "/run/afcgi.sock"
        assert.equal("unix:" .. sock, srv.addr)
        local st = assert(pstat.stat(sock))
        assert.equal("660", ("%o"):format(st.st_mode % 512))
        assert.equal(pwd.getpwnam("www-data").pw_uid, st.st_uid)
        local c = helpers.connect(srv)
        assert.equal("pong", c:request(1, "/afcgi-ping").body)
        c:close()
        srv:stop_ok(nil, nil, function() return slurp(elog) end)
    end)
end)

