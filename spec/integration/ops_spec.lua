-- Operations: the service manager's notifications ($NOTIFY_SOCKET, as
-- systemd's Type=notify gives it), --pid-file, the systemd units and the
-- logrotate snippet in examples/, --ping-path. Real processes, real
-- signals, the real systemd-analyze and logrotate; waits on datagrams, log
-- lines and files, each with a deadline.
local helpers = require "helpers"
local proc = require "proc"
local socket = require "socket"
local psocket = require "posix.sys.socket"
local ppoll = require "posix.poll"
local psignal = require "posix.signal"
local unistd = require "posix.unistd"
local pstat = require "posix.sys.stat"

local function lines_of(path)
    local n = 0
    for _ in helpers.read_file(path):gmatch("[^\n]+") do n = n + 1 end
    return n
end

-- A unix datagram socket at a fresh path, read as systemd reads
-- $NOTIFY_SOCKET: msgs() returns every message received so far (each a
-- table of its VAR=value lines, plus .at, the arrival time);
-- wait(pred, timeout, what) reads until pred(message) holds for one.
local function notify_listener()
    local dir = proc.tmpdir()
    local path = dir .. "/notify"
    local fd = assert(psocket.socket(psocket.AF_UNIX, psocket.SOCK_DGRAM, 0))
    helpers.defer(function() unistd.close(fd) end)
    assert(psocket.bind(fd, { family = psocket.AF_UNIX, path = path }))
    local l = { path = path, got = {} }
    local function take(ms)
        if ppoll.rpoll(fd, ms) ~= 1 then return nil end
        local data = assert(psocket.recv(fd, 4096))
        local m = { raw = data, at = socket.gettime() }
        for k, v in data:gmatch("([%u_]+)=([^\n]*)") do m[k] = v end
        l.got[#l.got + 1] = m
        return m
    end
    function l.wait(pred, timeout, what)
        local deadline = socket.gettime() + (timeout or 20)
        for _, m in ipairs(l.got) do
            if not m.seen and pred(m) then m.seen = true; return m end
        end
        while socket.gettime() < deadline do
            local m = take(100)
            if m and pred(m) then m.seen = true; return m end
        end
        local raws = {}
        for _, m in ipairs(l.got) do raws[#raws + 1] = m.raw end
        error(("no %s on NOTIFY_SOCKET within %s s; got: %s"):format(what, timeout or 20,
              table.concat(raws, " | ")), 2)
    end
    return l
end

local function is(var, value) return function(m) return m[var] == value end end

describe("service manager notifications", function()
    after_each(helpers.cleanup)

    it("--workers 2: READY=1 once both have loaded, RELOADING=1/READY=1 around SIGHUP, STATUS=, STOPPING=1",
       function()
        local l = notify_listener()
        local mark = proc.tmpdir() .. "/loads"
        local srv = helpers.start_server("ops", { args = { "--workers", "2" },
                                                  env = { NOTIFY_SOCKET = l.path, AFCGI_SPEC_MARK = mark } })
        l.wait(is("READY", "1"), 20, "READY=1")
        -- Both workers had loaded the app when the master said it serves.
        assert.equal(2, lines_of(mark))
        local st = l.wait(function(m) return m.STATUS ~= nil end, 20, "STATUS=")
        assert.matches("workers up: 2/2", st.STATUS)
        assert.matches("requests in flight: %d+", st.STATUS)
        -- The variable is not passed on to the handlers' environment.
        assert.equal("unset", helpers.connect(srv):request(1, "/notify").body)

        assert(psignal.kill(srv.pid, psignal.SIGHUP))
        local reloading = l.wait(is("RELOADING", "1"), 20, "RELOADING=1")
        assert.matches("^%d+$", reloading.MONOTONIC_USEC)
        l.wait(is("READY", "1"), 30, "READY=1 after the reload")
        -- READY=1 came once both workers had loaded the new code.
        assert.equal(4, lines_of(mark))

        assert(psignal.kill(srv.pid, psignal.SIGTERM))
        l.wait(is("STOPPING", "1"), 20, "STOPPING=1")
        srv:stop_ok(false, 20)
    end)

    it("one process: READY=1 once it serves, READY=1 again after a reload, STOPPING=1", function()
        local l = notify_listener()
        local srv = helpers.start_server("ops", { env = { NOTIFY_SOCKET = l.path } })
        l.wait(is("READY", "1"), 20, "READY=1")
        local c = helpers.connect(srv)
        assert.equal("ok pid=" .. srv.pid, c:request(1, "/").body)
        assert(psignal.kill(srv.pid, psignal.SIGHUP))
        l.wait(is("RELOADING", "1"), 20, "RELOADING=1")
        l.wait(is("READY", "1"), 20, "READY=1 after the reload")
        assert(psignal.kill(srv.pid, psignal.SIGTERM))
        l.wait(is("STOPPING", "1"), 20, "STOPPING=1")
        srv:stop_ok(false, 20)
    end)

    it("warns once about a NOTIFY_SOCKET nobody listens on, and serves", function()
        local path = proc.tmpdir() .. "/nobody-here"
        local srv = helpers.start_server("ops", { env = { NOTIFY_SOCKET = path } })
        srv:wait_log("cannot notify the service manager on NOTIFY_SOCKET", 10)
        local c = helpers.connect(srv)
        assert.equal("ok pid=" .. srv.pid, c:request(1, "/").body)
    end)
end)

describe("--pid-file", function()
    after_each(helpers.cleanup)

    it("holds the master's pid while it runs and is gone after it exits", function()
        local path = proc.tmpdir() .. "/afcgi.pid"
        local srv = helpers.start_server("ops", { args = { "--workers", "2", "--pid-file", path } })
        assert.equal(tostring(srv.pid) .. "\n", helpers.read_file(path))
        assert.equal(420, pstat.stat(path).st_mode % 512) -- 0644
        srv:stop_ok(psignal.SIGTERM, 20)
        assert.is_nil(pstat.stat(path))
    end)

    it("refuses to start when it cannot be written, naming the file", function()
        local path = proc.tmpdir() .. "/no/such/dir/afcgi.pid"
        local status, stderr = helpers.run_cli({ "--listen", "127.0.0.1:0", "--pid-file", path,
                                                 helpers.fixture("ops") })
        assert.are_not.equal(0, status)
        assert.matches(path:gsub("%p", "%%%0") .. "[^\n]*No such file or directory", stderr)
    end)
end)

describe("examples/systemd", function()
    after_each(helpers.cleanup)

    local analyze = io.popen("command -v systemd-analyze"):read("*l")
    local it_analyze = analyze and it or pending

    it_analyze("afcgi.service, afcgi.socket and afcgi@.service pass systemd-analyze verify", function()
        -- The units name /usr/local/bin/afcgi (make install); verify them
        -- with the binary under test in its place, the template as an
        -- instance.
        local dir = proc.tmpdir()
        local units = { ["afcgi.service"] = "afcgi.service", ["afcgi.socket"] = "afcgi.socket",
                        ["afcgi@.service"] = "afcgi@demo.service" }
        local args = {}
        for from, to in pairs(units) do
            local text = helpers.read_file("examples/systemd/" .. from)
            if not from:find("socket") then assert.matches("Type=notify", text) end
            local n
            text, n = text:gsub("/usr/local/bin/afcgi", helpers.bin())
            assert(from:find("socket") or n == 1, from .. " names /usr/local/bin/afcgi once")
            proc.write_file(dir .. "/" .. to, text)
            args[#args + 1] = "'" .. dir .. "/" .. to .. "'"
        end
        local p = io.popen(("systemd-analyze verify --man=no %s 2>&1; echo rc=$?"):format(table.concat(args, " ")))
        local out = p:read("*a")
        p:close()
        assert.equal("rc=0\n", out, out)
    end)
end)

describe("examples/afcgi.logrotate", function()
    after_each(helpers.cleanup)

    local logrotate = io.popen("command -v logrotate"):read("*l")
    local it_rotates = (logrotate and unistd.geteuid() == 0) and it or pending

    it_rotates("rotates the logs of afcgi as nobody in a root-owned directory; new lines land in the new files",
               function()
        -- The app and the logs' directory where nobody can read, the
        -- directory owned by root (mode 755): afcgi cannot create files in
        -- it once it runs as nobody; the snippet's "create" makes them.
        local dir = proc.tmpdir()
        assert(pstat.chmod(dir, tonumber("755", 8)))
        local logs = dir .. "/log"
        assert(pstat.mkdir(logs, tonumber("755", 8)))
        local app = dir .. "/app.lua"
        proc.write_file(app, helpers.read_file(helpers.fixture("ops")))
        assert(pstat.chmod(app, tonumber("644", 8)))
        local pid_file = dir .. "/afcgi.pid"
        local srv = helpers.start_server(app, {
            args = { "--user", "nobody", "--pid-file", pid_file,
                     "--access-log", logs .. "/access.log", "--error-log", logs .. "/error.log" },
            ready_file = logs .. "/error.log" })
        local c = helpers.connect(srv)
        assert.equal(200, c:request(1, "/before").status)
        helpers.wait_until(function()
            return helpers.read_file(logs .. "/access.log"):find("/before", 1, true)
        end, 10, "the first request's access log line")

        -- The snippet as shipped, with this run's paths and user.
        local conf = helpers.read_file("examples/afcgi.logrotate")
        local n
        conf, n = conf:gsub("/var/log/afcgi/", logs .. "/")
        assert.equal(1, n)
        conf, n = conf:gsub("/run/afcgi%.pid /run/afcgi%-%*%.pid", pid_file)
        assert.equal(1, n)
        conf, n = conf:gsub("create 0640 www%-data adm", "create 0640 nobody nogroup")
        assert.equal(1, n)
        proc.write_file(dir .. "/logrotate.conf", conf)
        local p = io.popen(("logrotate -f -s '%s/state' '%s/logrotate.conf' 2>&1; echo rc=$?"):format(dir, dir))
        local out = p:read("*a")
        p:close()
        assert.equal("rc=0\n", out, out)
        assert.is_truthy(helpers.read_file(logs .. "/access.log.1"):find("/before", 1, true))

        -- SIGUSR1 (the postrotate) reopened both logs: new lines go to the
        -- new files, which belong to nobody.
        helpers.wait_until(function()
            return (helpers.read_file(logs .. "/error.log"):find("SIGUSR1: reopened the log files", 1, true))
        end, 10, "the reopen's line in the new error log")
        assert.equal(200, c:request(1, "/after").status)
        helpers.wait_until(function()
            return helpers.read_file(logs .. "/access.log"):find("/after", 1, true)
        end, 10, "the access log line of a request after the rotation, in the new file")
        assert.is_nil(helpers.read_file(logs .. "/access.log"):find("/before", 1, true))
        assert.is_nil(helpers.read_file(logs .. "/access.log.1"):find("/after", 1, true))
        assert.equal(require("posix.pwd").getpwnam("nobody").pw_uid, pstat.stat(logs .. "/access.log").st_uid)
    end)
end)

describe("--ping-path", function()
    after_each(helpers.cleanup)

    it("answers 200 pong while every worker is up, 503 while one is missing", function()
        local srv = helpers.start_server("ops", { args = { "--workers", "2", "--ping-path", "/ping" } })
        local c = helpers.connect(srv)
        local r = c:request(1, "/ping")
        assert.equal(200, r.status)
        assert.equal("pong", r.body)
        assert.matches("^ok pid=%d+$", c:request(1, "/").body)
        -- A killed worker is missing until its replacement has loaded the
        -- app; the survivor answers the pings meanwhile.
        local kids = proc.wait_children(srv.pid, 2)
        assert(psignal.kill(kids[1], psignal.SIGKILL))
        local seen503
        helpers.wait_until(function()
            local c2 = helpers.connect(srv)
            local r2 = c2:request(1, "/ping")
            if r2.status == 503 then
                seen503 = r2.body
                return true
            end
            assert.equal(200, r2.status)
            return false
        end, 20, "a 503 from /ping while a worker is missing")
        assert.matches("1 of 2 workers up", seen503)
        helpers.wait_until(function()
            return helpers.connect(srv):request(1, "/ping").status == 200
        end, 30, "/ping back to 200 once the worker is replaced")
    end)
end)

describe("examples/afcgi.conf", function()
    after_each(helpers.cleanup)

    local conf = helpers.read_file("examples/afcgi.conf")

    it("shows every option --help lists", function()
        local _, help, out = helpers.run_cli({ "--help" })
        local text, missing, n = help .. out, {}, 0
        for name in text:gmatch("%-%-([%l%d%-]+)") do
            -- --config is how the file is read; --max-requests is the other
            -- name of --max-reqs (the file says so); --help and --version
            -- are no settings.
            if name ~= "config" and name ~= "help" and name ~= "version" and name ~= "max-requests" then
                n = n + 1
                local key = name:gsub("%-", "_")
                if not conf:find("\n%-?%-? ?" .. key .. " = ") then missing[#missing + 1] = key end
            end
        end
        assert(n >= 25, "--help listed only " .. n .. " options")
        assert.same({}, missing)
    end)

    it("starts afcgi as it stands, with this run's paths", function()
        local dir = proc.tmpdir()
        assert(pstat.chmod(dir, tonumber("755", 8)))
        assert(pstat.mkdir(dir .. "/log", tonumber("755", 8)))
        local app = dir .. "/app.lua"
        proc.write_file(app, helpers.read_file(helpers.fixture("ops")))
        assert(pstat.chmod(app, tonumber("644", 8)))
        local text = conf:gsub("/var/log/afcgi/", dir .. "/log/"):gsub("/run/afcgi%.pid", dir .. "/afcgi.pid")
            :gsub('user = "www%-data"', 'user = "nobody"'):gsub('group = "www%-data"', 'group = "nogroup"')
        proc.write_file(dir .. "/afcgi.conf", text)
        local srv = helpers.start_afcgi({ "--config", dir .. "/afcgi.conf", "--listen", "127.0.0.1:0", app },
                                        { ready_file = dir .. "/log/error.log" })
        assert.equal(tostring(srv.pid) .. "\n", helpers.read_file(dir .. "/afcgi.pid"))
        local c = helpers.connect(srv)
        assert.equal("pong", c:request(1, "/afcgi-ping").body)
        assert.matches("^ok pid=%d+$", c:request(1, "/").body)
        for _, pid in ipairs(proc.children(srv.pid)) do
            assert.equal(tostring(require("posix.pwd").getpwnam("nobody").pw_uid),
                         (proc.status_field(pid, "Uid"):match("^(%d+)")))
        end
    end)
end)
