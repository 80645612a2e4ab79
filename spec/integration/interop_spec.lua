-- Interop with what starts afcgi and what talks to it, when neither was
-- written here (issue 18).
--
-- Signals: managers such as kcgi's kfcgi, and some supervisors, block
-- SIGTERM, SIGHUP and SIGCHLD before they fork and exec; nohup and some init
-- scripts leave SIGHUP ignored. afcgi must start from its own signal state
-- whatever it inherited, and so must its workers. The spec execs afcgi from
-- a parent that did both (a few lines of Python between the spec and
-- afcgi), as a single process, with --workers 2, and with --workers 2
-- --dispatch pass (the master hands the workers their connections as
-- descriptors with cookies, the protocol kfcgi speaks): SIGHUP must load the
-- new code, SIGTERM must let the request in flight finish and exit 0 within
-- --shutdown-timeout.
local helpers = require "helpers"
local proc = require "proc"
local fc = require "fcgi_client"
local socket = require "socket"
local psignal = require "posix.signal"

-- Blocks SIGTERM, SIGHUP and SIGCHLD, ignores SIGHUP, then execs argv[1..].
local BLOCKING_PARENT = {
    "/usr/bin/python3", "-c",
    "import signal, os, sys\n"
        .. "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD})\n"
        .. "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        .. "os.execv(sys.argv[1], sys.argv[1:])\n",
}

-- Answers "VERSION PID"; /sleep?ms=N flushes "started VERSION PID" first,
-- sleeps N ms, then adds " done".
local APP = [[
local afcgi = require "afcgi"
local f = assert(io.open("/proc/self/stat"))
local PID = f:read("*l"):match("^(%%d+)")
f:close()
return function(req, res)
    res:header("Content-Type", "text/plain")
    if req.path == "/sleep" then
        res:write("started %s ", PID)
        res:flush()
        afcgi.sleep(tonumber(req.query:match("ms=(%%d+)")) / 1000)
        return res:write(" done")
    end
    res:write("%s ", PID)
end
]]

local SHUTDOWN_TIMEOUT = 5
local VALGRIND = os.getenv("VALGRIND_LOGS") ~= nil    -- make spec-valgrind

-- The bits of a /proc/PID/status signal mask ("SigBlk", "SigIgn") as a
-- number; signal n is bit n - 1.
local function sigmask(pid, field)
    local hex = assert(proc.status_field(pid, field), field .. " of pid " .. pid)
    return tonumber(hex, 16)
end

local function has_signal(mask, sig)
    return math.floor(mask / 2 ^ (sig - 1)) % 2 == 1
end

-- afcgi with args, exec'd from the blocking parent; returns the process
-- once it is ready, with .addr (stopped at cleanup with SIGKILL if the spec
-- has not stopped it).
local function start_blocked(args)
    local argv = {}
    for _, a in ipairs(BLOCKING_PARENT) do argv[#argv + 1] = a end
    argv[#argv + 1] = helpers.bin()
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local p = helpers.spawn(argv)
    helpers.defer(function() p:stop(psignal.SIGKILL, 2) end)
    local line = p:wait_log("ready, listening on ", 15)
    p.addr = line:match("ready, listening on (%S+)")
    return p
end

local function ask(p, uri)
    local c = fc.connect(p.addr)
    local r = c:request(1, uri)
    c:close()
    assert.equal(200, r.status, r.stdout)
    return r.body
end

local MODES = {
    { name = "a single process", args = {}, procs = 1 },
    { name = "--workers 2", args = { "--workers", "2" }, procs = 2 },
    { name = "--workers 2 --dispatch pass", args = { "--workers", "2", "--dispatch", "pass" }, procs = 2 },
}

describe("started with SIGTERM, SIGHUP and SIGCHLD blocked and SIGHUP ignored", function()
    after_each(helpers.cleanup)

    for _, mode in ipairs(MODES) do
        it(mode.name .. " reloads on SIGHUP and drains and exits 0 on SIGTERM", function()
            local dir = proc.tmpdir()
            local app = dir .. "/app.lua"
            proc.write_file(app, APP:format("v1", "v1"))
            local args = { "--listen", "127.0.0.1:0", "--shutdown-timeout", tostring(SHUTDOWN_TIMEOUT) }
            for _, a in ipairs(mode.args) do args[#args + 1] = a end
            args[#args + 1] = app
            local p = start_blocked(args)
            local servers = { p.pid }
            if mode.procs > 1 then servers = proc.wait_children(p.pid, mode.procs) end
            -- the parent's state is gone: nothing blocked where requests are
            -- served, SIGHUP and SIGTERM not ignored anywhere (valgrind keeps
            -- signals blocked in the real process and delivers them itself)
            for _, pid in ipairs(VALGRIND and {} or servers) do
                assert.equal(0, sigmask(pid, "SigBlk"), "signals blocked in pid " .. pid)
            end
            for _, pid in ipairs(VALGRIND and {} or { p.pid, unpack(servers) }) do
                local ign = sigmask(pid, "SigIgn")
                assert.is_false(has_signal(ign, psignal.SIGHUP), "SIGHUP ignored in pid " .. pid)
                assert.is_false(has_signal(ign, psignal.SIGTERM), "SIGTERM ignored in pid " .. pid)
                assert.is_false(has_signal(ign, psignal.SIGCHLD), "SIGCHLD ignored in pid " .. pid)
            end
            assert.matches("^v1 %d+$", ask(p, "/"))

            -- SIGHUP: every serving process loads the new code
            proc.write_file(app, APP:format("v2", "v2"))
            local mark = p:mark()
            psignal.kill(p.pid, psignal.SIGHUP)
            helpers.wait_until(function()
                return #p:lines("reloaded [^\n]*: generation 2 serves new requests", mark) == mode.procs
            end, 10, mode.procs .. " reload lines; log:\n" .. p:log())
            for _ = 1, 4 * mode.procs do assert.matches("^v2 %d+$", ask(p, "/")) end

            -- SIGTERM: the request in flight finishes, then a clean exit
            local c = fc.connect(p.addr, { timeout = SHUTDOWN_TIMEOUT + 5 })
            helpers.defer(function() c:close() end)
            proc.send(c, 1, "/sleep?ms=500")
            assert.matches("started v2 %d+$", proc.wait_started(c, 1))
            local t0 = socket.gettime()
            psignal.kill(p.pid, psignal.SIGTERM)
            local r = c:read_response(1)
            assert.equal(200, r.status)
            assert.matches("^started v2 %d+ done$", r.body)
            local status, how = p:stop(false, SHUTDOWN_TIMEOUT + 2)
            local took = socket.gettime() - t0
            assert.equal("exited", how, p.text)
            assert.equal(0, status, p.text)
            assert.is_true(took < SHUTDOWN_TIMEOUT, ("took %.2f s to exit"):format(took))
            assert.is_nil(p.text:find("past the shutdown timeout", 1, true), p.text)
            assert.is_nil(p.text:find("Sanitizer", 1, true), p.text)
            assert.is_nil(p.text:find("runtime error", 1, true), p.text)
            for _, pid in ipairs(servers) do proc.wait_gone(pid, 2) end
        end)
    end
end)

-- req.path, req.script_name, req.path_info, req.request_path --------------
--
-- req.path: DOCUMENT_URI when not empty, else the path of REQUEST_URI, else
-- SCRIPT_NAME .. PATH_INFO (CGI/1.1). req.request_path: REQUEST_URI's path
-- decoded and normalised as nginx makes $uri. The shapes below are what the
-- fronts and clients send: nginx, Caddy 2.6 without split_path, Apache and
-- h2o (REQUEST_URI), a WSGI bridge such as flup's client or cgi-fcgi (CGI
-- only), and a front-controller rewrite (nginx try_files, Caddy php_fastcgi).
local cjson = require "cjson"

local BASE = {
    GATEWAY_INTERFACE = "CGI/1.1", SERVER_PROTOCOL = "HTTP/1.1", REQUEST_METHOD = "GET",
    SERVER_NAME = "localhost", SERVER_PORT = "80", REMOTE_ADDR = "127.0.0.1", QUERY_STRING = "",
}

-- Exactly BASE plus params (no path param is added).
local function shape(params)
    local p = {}
    for _, t in ipairs({ BASE, params }) do
        for k, v in pairs(t) do p[k] = v end
    end
    return p
end

local function ask_json(srv, params)
    local c = helpers.connect(srv)
    local r = c:request(1, params)
    assert.equal("application/json", r.headers["content-type"], r.stdout)
    return cjson.decode(r.body), r.status
end

local function null_to_nil(v)
    if v == cjson.null then return nil end
    return v
end

-- { params, expected req.path, script_name, path_info, request_path (false: nil), route }
local SHAPES = {
    { "nginx (fastcgi_params)", { DOCUMENT_URI = "/users/42", REQUEST_URI = "/users/42?x=1",
      SCRIPT_NAME = "/users/42", QUERY_STRING = "x=1" },
      "/users/42", "/users/42", "", "/users/42", "user" },
    { "Caddy 2.6 without split_path", { DOCUMENT_URI = "", REQUEST_URI = "/users/7?a=1",
      SCRIPT_NAME = "", PATH_INFO = "/users/7" },
      "/users/7", "", "/users/7", "/users/7", "user" },
    { "REQUEST_URI only (Apache, h2o)", { REQUEST_URI = "/static/a/b.css?v=2" },
      "/static/a/b.css", "", "", "/static/a/b.css", "static" },
    { "CGI: empty SCRIPT_NAME, PATH_INFO", { SCRIPT_NAME = "", PATH_INFO = "/users/5" },
      "/users/5", "", "/users/5", false, "user" },
    { "CGI: SCRIPT_NAME and PATH_INFO", { SCRIPT_NAME = "/app.fcgi", PATH_INFO = "/users/42" },
      "/app.fcgi/users/42", "/app.fcgi", "/users/42", false, nil },
    { "CGI: SCRIPT_NAME alone", { SCRIPT_NAME = "/users/9" },
      "/users/9", "/users/9", "", false, "user" },
    { "CGI: PATH_INFO alone", { PATH_INFO = "/" }, "/", "", "/", false, "root" },
    { "no path at all", {}, "", "", "", false, "root" },
    { "front controller (try_files $uri /index.php)", { DOCUMENT_URI = "/index.php",
      SCRIPT_NAME = "/index.php", REQUEST_URI = "/users/42?x=1", QUERY_STRING = "x=1" },
      "/index.php", "/index.php", "", "/users/42", "user" },
    { "front controller (Caddy php_fastcgi)", { DOCUMENT_URI = "/index.php",
      SCRIPT_NAME = "/index.php", PATH_INFO = "", REQUEST_URI = "/users//3/." },
      "/index.php", "/index.php", "", "/users/3/", nil },
}

-- REQUEST_URI -> req.request_path (false: nil, and the router's 400).
local TARGETS = {
    { "/users/42", "/users/42" }, { "/users/42?q=/../..", "/users/42" },
    { "/users//42", "/users/42" }, { "//users///42", "/users/42" },
    { "/a/../users/42", "/users/42" }, { "/./users/./42", "/users/42" },
    { "/users/%34%32", "/users/42" }, { "/users%2F42", "/users/42" },
    { "/a/%2E%2E/users/1", "/users/1" }, { "/a/%2e/b", "/a/b" },
    { "/a/b/..", "/a/" }, { "/a/.", "/a/" }, { "/a/b/../", "/a/" }, { "/a/", "/a/" },
    { "/", "/" }, { "//", "/" }, { "/a/...", "/a/..." }, { "/a/..b/.c", "/a/..b/.c" },
    { "/a%3Fb", "/a?b" }, { "/a%23b", "/a#b" }, { "/a%25b", "/a%b" }, { "/a%2525", "/a%25" },
    { "/caf%C3%A9", "/caf\xC3\xA9" }, { "/a+b", "/a+b" }, { "/x#frag", "/x" },
    { "http://example.com/x//y", "/x/y" }, { "http://example.com", "/" },
    { "/..", false }, { "/../users/1", false }, { "/a/../..", false }, { "/%2e%2E/x", false },
    { "/a%zz", false }, { "/a%4", false }, { "/a%", false }, { "/a%00b", false },
    { "/a b", false }, { "/a\tb", false }, { "*", false }, { "users/1", false },
}

describe("req.path and req.request_path", function()
    local srv, access
    before_each(function()
        access = proc.tmpdir() .. "/access.log"
        srv = helpers.start_server("paths", { args = { "--status-path", "/status",
                                                       "--access-log", access } })
    end)
    after_each(helpers.cleanup)

    for _, s in ipairs(SHAPES) do
        it("follow the rule for " .. s[1], function()
            local v, status = ask_json(srv, shape(s[2]))
            assert.same({ s[3], s[4], s[5], s[6] or nil, s[7] },
                        { v.path, v.script_name, v.path_info, null_to_nil(v.request_path),
                          null_to_nil(v.route) })
            assert.equal(s[7] and 200 or 404, status)
        end)
    end

    it("decode and normalise REQUEST_URI as nginx does $uri, and the router answers 400 for what nginx rejects",
       function()
        for _, t in ipairs(TARGETS) do
            local v, status = ask_json(srv, shape({ DOCUMENT_URI = "/index.php", SCRIPT_NAME = "/index.php",
                                                    REQUEST_URI = t[1] }))
            if t[2] then
                assert.equal(t[2], v.request_path, t[1])
                assert.equal("/index.php", v.path, t[1])
            else
                assert.same({ 400, 400, "Bad Request" }, { status, v.status, v.error }, t[1])
            end
        end
    end)

    it("give --status-path, the access log and the error log the same path", function()
        local v, status = ask_json(srv, shape({ SCRIPT_NAME = "", PATH_INFO = "/status" }))
        assert.equal(200, status)
        assert.is_number(v.requests_total, "not the status page")
        assert.is_table(v.workers)
        local c = helpers.connect(srv)
        local r = c:request(1, shape({ SCRIPT_NAME = "/app.fcgi", PATH_INFO = "/x/boom" }))
        assert.equal(500, r.status)
        srv:wait_log("request 1 /app%.fcgi/x/boom: handler error: [^\n]*boom", 5)
        r = c:request(2, shape({ SCRIPT_NAME = "/app.fcgi", PATH_INFO = "/users/1" }))
        assert.equal(404, r.status)
        helpers.wait_until(function()
            return helpers.read_file(access):find(" GET /app%.fcgi/users/1 404 ")
        end, 5, "the access log line; it has:\n" .. helpers.read_file(access))
        assert.matches(" GET /app%.fcgi/x/boom 500 ", helpers.read_file(access))
    end)
end)

-- Behind real fronts with a front-controller rewrite: every path that is
-- not a file goes to /index.php, so DOCUMENT_URI and SCRIPT_NAME are the
-- script's and only REQUEST_URI has the client's path.
local fronts = require "fronts"

-- try_files $uri /index.php, as PHP apps are set up; $uri before the
-- rewrite goes along as NGINX_URI, so each req.request_path can be held
-- against nginx's own.
local NGINX_FRONT_CONTROLLER = [[
events { worker_connections 256; }
http {
    access_log off;
${temps}    server {
        listen 127.0.0.1:${port};
        root ${prefix}/www;
        location / {
            set $client_uri $uri;
            try_files $uri /index.php;
        }
        location ~ \.php$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param NGINX_URI $client_uri;
            fastcgi_pass ${upstream};
        }
    }
}
]]

local CADDY_FRONT_CONTROLLER = [[
{
	admin off
	auto_https off
}

http://127.0.0.1:${port} {
	root * ${root}
	php_fastcgi ${upstream}
}
]]

local function start_caddy_php(upstream)
    local prefix = fronts.prefix("caddy-php")
    assert(os.execute("mkdir -p '" .. prefix .. "/www' && : > '" .. prefix .. "/www/index.php'"))
    local port = helpers.free_port()
    local path = fronts.write(prefix, "Caddyfile", fronts.render(CADDY_FRONT_CONTROLLER,
        { port = port, upstream = upstream, root = prefix .. "/www" }))
    return fronts.foreground("caddy", { "/usr/bin/caddy", "run", "--config", path, "--adapter", "caddyfile" },
        port, { env = { HOME = prefix, XDG_CONFIG_HOME = prefix .. "/config",
                        XDG_DATA_HOME = prefix .. "/data" } })
end

local function get_json(port, target)
    local r = helpers.http_request(port, { path = target })
    return r.status, r.headers["content-type"] == "application/json" and cjson.decode(r.body) or nil, r
end

describe("behind a front-controller rewrite", function()
    local srv
    before_each(function() srv = helpers.start_server("paths") end)
    after_each(helpers.cleanup)

    it("nginx try_files $uri /index.php: the router routes on req.request_path, which is nginx's $uri",
       function()
        local ngx = helpers.start_nginx(NGINX_FRONT_CONTROLLER, { upstream = srv.addr })
        local status, v, r = get_json(ngx.port, "/users/42?x=1")
        assert.equal(200, status, r.body)
        assert.same({ "/index.php", "/index.php", "/users/42", "user", "42" },
                    { v.path, v.script_name, v.request_path, v.route, v.params.id })
        local compared = 0
        for _, t in ipairs(TARGETS) do
            if t[1]:sub(1, 1) == "/" and not t[1]:find("[ \t#]") then
                status, v, r = get_json(ngx.port, t[1])
                if t[2] then
                    -- nginx passed it on: afcgi's path is nginx's own $uri
                    assert.is_table(v, t[1] .. ": " .. r.status .. " " .. r.body)
                    assert.equal(v.nginx_uri, v.request_path, t[1])
                    assert.equal(t[2], v.request_path, t[1])
                    compared = compared + 1
                else
                    assert.equal(400, status, t[1] .. " reached afcgi: " .. r.body)   -- nginx's own 400
                end
            end
        end
        assert.is_true(compared >= 20, compared .. " targets compared")
    end)

    it("Caddy php_fastcgi: the router routes on req.request_path", function()
        local caddy = start_caddy_php(srv.addr)
        for target, want in pairs({ ["/users/42?x=1"] = { "user", "/users/42" },
                                    ["/users//7"] = { "user", "/users/7" },
                                    ["/a/../users/8"] = { "user", "/users/8" },
                                    ["/%75sers/9"] = { "user", "/users/9" },
                                    ["/static/css/a.css"] = { "static", "/static/css/a.css" },
                                    ["/"] = { "root", "/" } }) do
            local status, v, r = get_json(caddy.port, target)
            assert.equal(200, status, target .. ": " .. r.body)
            assert.same({ "/index.php", "/index.php", want[2], want[1] },
                        { v.path, v.script_name, v.request_path, v.route }, target)
        end
        local status, v = get_json(caddy.port, "/nothing/here")
        assert.same({ 404, "/nothing/here" }, { status, v.request_path })
    end)
end)
