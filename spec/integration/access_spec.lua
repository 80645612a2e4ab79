-- Who may connect and how the sockets are set up: --allow and
-- FCGI_WEB_SERVER_ADDRS, unix socket mode and owner, --user, and listeners
-- handed over on fd 0 (FastCGI) or by systemd (LISTEN_FDS from fd 3).
local helpers = require "helpers"
local proc = require "proc"
local unistd = require "posix.unistd"
local pstat = require "posix.sys.stat"
local pwd = require "posix.pwd"
local grp = require "posix.grp"

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- The body of "/" from a connection made from local address from_host.
local function served_from(srv, from_host, id)
    local c = proc.connect_from(srv.addr, from_host)
    local r = c:request(id or 1, "/")
    assert.equal(200, r.status, from_host)
    assert.matches("^pid=%d+ gen=1$", r.body)
    c:close()
end

-- A connection from from_host is closed without an answer and logged.
local function refused_from(srv, from_host)
    local mark = srv:mark()
    local c = proc.connect_from(srv.addr, from_host)
    local _, lport = c.sock:getsockname()
    proc.send(c, 1, "/")
    assert.is_true(c:closed_by_peer(5), "a client from " .. from_host .. " was not refused")
    assert.equal(0, c:end_count(1))
    srv:wait_log("connection from " .. escape(from_host .. ":" .. lport) .. " refused: not in "
                 .. "%-%-allow or FCGI_WEB_SERVER_ADDRS", 5, mark)
end

-- Starts the lifecycle fixture on 127.0.0.1:0 with args and opts.env.
local function start(args, env)
    local argv = { "--listen", "127.0.0.1:0", "--shutdown-timeout", "3" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv[#argv + 1] = helpers.fixture("lifecycle")
    return helpers.start_afcgi(argv, { env = env or { FCGI_WEB_SERVER_ADDRS = false } })
end

describe("client access", function()
    after_each(helpers.cleanup)

    it("refuses a client outside --allow 127.0.0.2 and admits one bound to it", function()
        local srv = start({ "--allow", "127.0.0.2" })
        refused_from(srv, "127.0.0.1")
        served_from(srv, "127.0.0.2")
        refused_from(srv, "127.0.0.3")
        served_from(srv, "127.0.0.2", 2)
    end)

    it("matches CIDR prefixes, on and off byte boundaries", function()
        local srv = start({ "--allow", "127.0.0.0/8" })
        served_from(srv, "127.0.0.1")
        served_from(srv, "127.0.0.2")
        served_from(srv, "127.9.8.7")
        srv = start({ "--allow", "127.0.0.2/31" })   -- .2 and .3 only
        refused_from(srv, "127.0.0.1")
        served_from(srv, "127.0.0.2")
        served_from(srv, "127.0.0.3")
        refused_from(srv, "127.0.0.4")
    end)

    it("admits any client of several --allow values", function()
        local srv = start({ "--allow", "192.0.2.1", "--allow", "127.0.0.3" })
        served_from(srv, "127.0.0.3")
        refused_from(srv, "127.0.0.1")
    end)

    it("takes the list from FCGI_WEB_SERVER_ADDRS when no --allow is given", function()
        local srv = start({}, { FCGI_WEB_SERVER_ADDRS = "127.0.0.2" })
        refused_from(srv, "127.0.0.1")
        served_from(srv, "127.0.0.2")
        srv = start({}, { FCGI_WEB_SERVER_ADDRS = "127.0.0.5,127.0.0.2" })
        served_from(srv, "127.0.0.2")
        served_from(srv, "127.0.0.5")
        refused_from(srv, "127.0.0.1")
    end)

    it("lets --allow win over FCGI_WEB_SERVER_ADDRS", function()
        local srv = start({ "--allow", "127.0.0.1" }, { FCGI_WEB_SERVER_ADDRS = "127.0.0.2" })
        served_from(srv, "127.0.0.1")
        refused_from(srv, "127.0.0.2")
    end)

    it("admits everyone without either", function()
        local srv = start({})
        served_from(srv, "127.0.0.1")
        served_from(srv, "127.0.0.2")
    end)
end)

describe("unix sockets and privileges", function()
    after_each(helpers.cleanup)

    -- Under valgrind a worker forked after the switch to nobody creates its
    -- own log file: `make spec-valgrind` makes the directory writable for
    -- that; with a directory nobody cannot write to, these are left out.
    local vg_logs = os.getenv("VALGRIND_LOGS")
    local vg_st = vg_logs and pstat.stat(vg_logs)
    local it_drops_root = vg_logs and not (vg_st and math.floor(vg_st.st_mode / 2) % 2 == 1)
        and pending or it

    local nobody = pwd.getpwnam("nobody")
    local nogroup = grp.getgrnam("nogroup")

    local function ids(pid, field)
        return proc.status_field(pid, field):match("^(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
    end

    -- Copies of the lifecycle fixture and of afcgi's own Lua modules (lua/)
    -- in a new scratch directory of mode mode (default 755: anyone may read
    -- it), so that a server dropped to nobody can load them wherever the
    -- checkout is (under /root, mode 700, it could not). Returns the app's
    -- path, the env that points the server at the modules, and the directory.
    local function scratch_copy(mode)
        local dir = proc.tmpdir()
        assert.equal(0, os.execute(("cp '%s' '%s/lifecycle.lua' && cp -R '%s/lua' '%s/' && "
            .. "chmod -R a+rX '%s' && chmod %s '%s'"):format(helpers.fixture("lifecycle"), dir,
            unistd.getcwd(), dir, dir, mode or "755", dir)))
        return dir .. "/lifecycle.lua", { AFCGI_LUA_DIR = dir .. "/lua" }, dir
    end

    -- Runs afcgi --user nobody on app with env; asserts it fails at once,
    -- with exit status 2 and one line saying that what (a Lua pattern) cannot
    -- be read: permission denied on the directory dir.
    local function denied(app, env, what, dir)
        local status, stderr = helpers.run_cli({ "--listen", "127.0.0.1:0", "--user", "nobody", app },
                                               nil, { env = env })
        assert.equal(2, status, stderr)
        assert.matches("^afcgi: %-%-user nobody: cannot read " .. what .. ": permission denied on "
                       .. "the directory " .. escape(dir) .. "\n$", stderr)
    end

    it("gives a unix socket --socket-mode 600 and serves on it", function()
        local path = proc.tmpdir() .. "/afcgi.sock"
        local srv = helpers.start_server("lifecycle", { listen = { "unix:" .. path },
                                                        args = { "--socket-mode", "600" } })
        assert.equal("unix:" .. path, srv.addr)
        local st = assert(pstat.stat(path))
        assert.is_true(pstat.S_ISSOCK(st.st_mode) ~= 0, "not a socket")
        assert.equal("600", ("%o"):format(st.st_mode % 512))
        local c = helpers.connect(srv)
        assert.matches("^pid=%d+ gen=1$", c:request(1, "/").body)
    end)

    it("gives a unix socket --socket-mode 666 and --socket-owner nobody:nogroup", function()
        local path = proc.tmpdir() .. "/afcgi.sock"
        local srv = helpers.start_server("lifecycle", { listen = { "unix:" .. path },
            args = { "--socket-mode", "666", "--socket-owner", "nobody:nogroup" } })
        local st = assert(pstat.stat(path))
        assert.equal("666", ("%o"):format(st.st_mode % 512))
        assert.equal(nobody.pw_uid, st.st_uid)
        assert.equal(nogroup.gr_gid, st.st_gid)
        local c = helpers.connect(srv)
        assert.matches("^pid=%d+ gen=1$", c:request(1, "/").body)
    end)

    it("gives --socket-owner USER the user's own group", function()
        local path = proc.tmpdir() .. "/afcgi.sock"
        helpers.start_server("lifecycle", { listen = { "unix:" .. path },
                                            args = { "--socket-owner", "nobody" } })
        local st = assert(pstat.stat(path))
        assert.equal(nobody.pw_uid, st.st_uid)
        assert.equal(nobody.pw_gid, st.st_gid)
    end)

    it("fails with one line for an unknown --socket-owner", function()
        local path = proc.tmpdir() .. "/afcgi.sock"
        local status, stderr = helpers.run_cli({ "--listen", "unix:" .. path, "--socket-owner",
            "no-such-user-here", helpers.fixture("lifecycle") })
        assert.equal(2, status)
        assert.matches("^afcgi: [^\n]*no%-such%-user%-here[^\n]*\n$", stderr)
    end)

    it_drops_root("runs as --user nobody once bound, and serves", function()
        assert.equal(0, unistd.geteuid(), "this spec runs as root")
        local app, env = scratch_copy()
        local srv = helpers.start_server(app, { args = { "--user", "nobody" }, env = env })
        local u = { ids(srv.pid, "Uid") }
        local g = { ids(srv.pid, "Gid") }
        for i = 1, 4 do
            assert.equal(tostring(nobody.pw_uid), u[i], "Uid field " .. i)
            assert.equal(tostring(nobody.pw_gid), g[i], "Gid field " .. i)
        end
        local c = helpers.connect(srv)
        assert.equal("pid=" .. srv.pid .. " gen=1", c:request(1, "/").body)
    end)

    it_drops_root("runs the workers as --user nobody --group nogroup, and they serve", function()
        local app, env = scratch_copy()
        local srv = helpers.start_server(app, {
            args = { "--workers", "2", "--user", "nobody", "--group", "nogroup" }, env = env })
        local kids = proc.wait_children(srv.pid, 2)
        for _, pid in ipairs(kids) do
            assert.equal(tostring(nobody.pw_uid), (ids(pid, "Uid")), "worker " .. pid)
            assert.equal(tostring(nogroup.gr_gid), (ids(pid, "Gid")), "worker " .. pid)
            assert.equal(tostring(nobody.pw_uid), select(4, ids(pid, "Uid")), "saved uid")
        end
        local c = helpers.connect(srv)
        local pid = tonumber(c:request(1, "/").body:match("^pid=(%d+)"))
        assert.is_true(pid == kids[1] or pid == kids[2])
    end)

    it("fails naming the path when --user nobody cannot read the app's directory", function()
        local app, env, dir = scratch_copy("700")
        denied(app, env, escape(app) .. " %(the app%)", dir)
    end)

    it("fails naming the path when --user nobody cannot read afcgi's own modules", function()
        local app = scratch_copy()
        local _, env, dir = scratch_copy("700")
        denied(app, env, escape(dir .. "/lua/afcgi/request.lua") .. " %(afcgi's own Lua modules%)", dir)
    end)
end)

describe("inherited listeners", function()
    after_each(helpers.cleanup)

    it("serves on a listening socket inherited on fd 0 when no --listen is given", function()
        local fd, port = proc.tcp_listener()
        local srv = helpers.start_afcgi({ "--shutdown-timeout", "3", helpers.fixture("lifecycle") },
                               { fds = { [0] = fd } })
        unistd.close(fd)
        assert.equal("127.0.0.1:" .. port, srv.ready_line:match("ready, listening on (%S+)$"))
        local c = helpers.connect(srv)
        assert.equal("pid=" .. srv.pid .. " gen=1", c:request(1, "/").body)
        -- the listener moved off fd 0, which is /dev/null again
        local link = io.popen("readlink /proc/" .. srv.pid .. "/fd/0")
        assert.equal("/dev/null", link:read("*l"))
        link:close()
    end)

    it("serves with --workers 2 on a socket inherited on fd 0", function()
        local fd, port = proc.tcp_listener()
        local srv = helpers.start_afcgi({ "--workers", "2", "--shutdown-timeout", "3",
                                 helpers.fixture("lifecycle") }, { fds = { [0] = fd } })
        unistd.close(fd)
        assert.equal("127.0.0.1:" .. port, srv.addr)
        local kids = proc.wait_children(srv.pid, 2)
        local c = helpers.connect(srv)
        local pid = tonumber(c:request(1, "/").body:match("^pid=(%d+)"))
        assert.is_true(pid == kids[1] or pid == kids[2])
    end)

    it("serves on systemd's socket (LISTEN_FDS=1, LISTEN_PID, fd 3)", function()
        local fd, port = proc.tcp_listener()
        local srv = helpers.start_afcgi({ "--shutdown-timeout", "3", helpers.fixture("lifecycle") },
                               { fds = { [3] = fd }, env = { LISTEN_FDS = "1" }, listen_pid = true })
        unistd.close(fd)
        assert.equal("127.0.0.1:" .. port, srv.ready_line:match("ready, listening on (%S+)$"))
        local c = helpers.connect(srv)
        assert.equal("pid=" .. srv.pid .. " gen=1", c:request(1, "/").body)
    end)

    it("serves on every socket of LISTEN_FDS=2 (fds 3 and 4)", function()
        local fd1, port1 = proc.tcp_listener()
        local fd2, port2 = proc.tcp_listener()
        local srv = helpers.start_afcgi({ "--shutdown-timeout", "3", helpers.fixture("lifecycle") },
                               { fds = { [3] = fd1, [4] = fd2 }, env = { LISTEN_FDS = "2" },
                                 listen_pid = true })
        unistd.close(fd1)
        unistd.close(fd2)
        assert.same({ "127.0.0.1:" .. port1, "127.0.0.1:" .. port2 }, srv.addrs)
        for i, addr in ipairs(srv.addrs) do
            local c = helpers.connect(srv, addr)
            assert.equal("pid=" .. srv.pid .. " gen=1", c:request(i, "/").body)
        end
    end)
end)
