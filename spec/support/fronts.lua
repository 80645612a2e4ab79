-- fronts: start a web server ("front") of our own in front of afcgi, from
-- one of the configurations in examples/, for spec/integration/fronts_spec.lua
-- (and examples_fronts_spec.lua).
--
-- A front gets a fresh temp directory (its "prefix"), its configuration is
-- the example file with its fixed addresses replaced (each replacement must
-- match exactly once, so an edited example fails loudly instead of testing
-- something else), and it runs either in the foreground as our child
-- (stopped by PID with SIGTERM, then SIGKILL) or as a daemon with its own
-- pid file (stopped by the PID in that file). Never through systemctl or
-- service. The prefix is removed at cleanup, whatever happened.
local stdlib = require "posix.stdlib"
local psignal = require "posix.signal"
local socket = require "socket"
local helpers = require "helpers"

local M = {}

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The text of file (e.g. "examples/h2o.conf") with each { pattern,
-- replacement } of subs applied; every pattern must match exactly once.
-- Replacements may hold ${name} placeholders, filled in by M.render.
function M.example(file, subs)
    local text = assert(io.open(file)):read("*a")
    for _, s in ipairs(subs) do
        local n
        text, n = text:gsub(s[1], (s[2]:gsub("%%", "%%%%")))
        if n ~= 1 then
            error(("%s: %q matched %d times (expected once): update the spec with the example")
                  :format(file, s[1], n), 2)
        end
    end
    return text
end

-- template with every ${name} (lower case: Apache keeps ${NAME} for its own
-- variables) replaced by vars[name]; an unknown name fails.
function M.render(template, vars)
    return (template:gsub("%${([%l_]+)}", function(k)
        return assert(vars[k] and tostring(vars[k]), "no value for ${" .. k .. "}")
    end))
end

-- A fresh temp directory for a front, removed at cleanup (registered first,
-- so it runs after the front was stopped).
function M.prefix(name)
    local prefix = assert(stdlib.mkdtemp("/tmp/afcgi-" .. name .. "-XXXXXX"))
    helpers.defer(function() os.execute("rm -rf " .. shq(prefix)) end)
    return prefix
end

-- Waits until something accepts TCP connections on 127.0.0.1:port; alive()
-- (optional) returning false fails at once with why().
function M.wait_accepting(port, what, alive, why)
    helpers.wait_until(function()
        if alive and not alive() then error(what .. " exited: " .. why(), 0) end
        local s = socket.tcp()
        s:settimeout(0.5)
        local connected = s:connect("127.0.0.1", port)
        s:close()
        return connected
    end, 15, what .. " to accept connections on port " .. port)
end

-- Writes conf into the front's prefix as name; returns the path.
function M.write(prefix, name, conf)
    local path = prefix .. "/" .. name
    local f = assert(io.open(path, "w"))
    f:write(conf)
    f:close()
    return path
end

-- Runs argv in the foreground as our child (stderr kept by the process
-- object: :log(), :wait_log()), with opts.env set in its environment, and
-- waits until it accepts on port. At cleanup: SIGTERM, SIGKILL after 6 s.
-- Returns the process (helpers' Process) with .port.
function M.foreground(what, argv, port, opts)
    opts = opts or {}
    local p = helpers.spawn(argv, { env = opts.env })
    p.port = port
    helpers.defer(function() p:stop() end)
    M.wait_accepting(port, what, function() return p:alive() end, function()
        return table.concat(argv, " ") .. "\n" .. p:log() .. (opts.extra_log and opts.extra_log() or "")
    end)
    return p
end

-- A front run in the foreground (M.foreground) from an example file: a
-- fresh prefix and a free port; f.file with f.subs applied (M.example) and
-- rendered (M.render) with prefix, port, upstream ("host:port") and
-- upstream_port, written into the prefix under the file's own name; then
-- f.argv(path) started, with f.opts(prefix) as options. f.prepare(prefix),
-- if given, runs first. Returns the process and the prefix.
function M.from_example(what, upstream, f)
    local prefix = M.prefix(what)
    if f.prepare then f.prepare(prefix) end
    local port = helpers.free_port()
    local vars = { prefix = prefix, port = port, upstream = upstream, upstream_port = upstream:match(":(%d+)$") }
    local path = M.write(prefix, f.file:match("[^/]+$"), M.render(M.example(f.file, f.subs), vars))
    return M.foreground(what, f.argv(path), port, f.opts and f.opts(prefix)), prefix
end

-- Runs cmd (a shell command line that daemonizes and writes its pid to
-- pidfile) and waits until the daemon accepts on port. At cleanup it is
-- stopped by the PID in pidfile: SIGTERM, SIGKILL after 5 s.
function M.daemon(what, cmd, pidfile, port, log_file)
    local function stop()
        local pid = tonumber(helpers.read_file(pidfile):match("%d+"))
        if not pid then return end
        psignal.kill(pid, psignal.SIGTERM)
        local ok = pcall(helpers.wait_until, function() return psignal.kill(pid, 0) ~= 0 end,
                         5, what .. " to exit")
        if not ok then psignal.kill(pid, psignal.SIGKILL) end
    end
    helpers.defer(stop)
    local ok = os.execute(cmd)
    assert(ok == 0 or ok == true, what .. " did not start: " .. helpers.read_file(log_file))
    M.wait_accepting(port, what)
    return { port = port, pidfile = pidfile, log_file = log_file }
end

-- nginx with an example file of examples/ (server and upstream blocks) on a
-- free port in front of upstream ("host:port"): the file with its listen
-- port (listen, e.g. "8080") and upstream address replaced and its include
-- made absolute, inside the events/http blocks of helpers.nginx_conf that
-- keep nginx's files in its temp prefix. Returns helpers.start_nginx's
-- process (.port, .prefix).
function M.nginx(upstream, file, listen)
    local text = M.example(file, {
        { "listen 127%.0%.0%.1:" .. listen .. ";", "listen 127.0.0.1:${port};" },
        { "server 127%.0%.0%.1:9000;", "server ${upstream};" },
        { "include fastcgi_params;", "include /etc/nginx/fastcgi_params;" },
    })
    return helpers.start_nginx(helpers.nginx_conf(text), { upstream = upstream })
end

-- HAProxy with examples/haproxy.cfg itself (only its bind and server
-- addresses replaced) on a free port in front of upstream ("host:port"), as
-- a daemon with its pid file and log in its own prefix. Returns the object
-- of M.daemon (.port, .pidfile, .log_file).
function M.haproxy(upstream)
    local prefix = M.prefix("haproxy")
    local port = helpers.free_port()
    local conf = M.render(M.example("examples/haproxy.cfg", {
        { "bind 127%.0%.0%.1:8081\n", "bind 127.0.0.1:${port}\n" },
        { "server afcgi1 127%.0%.0%.1:9000 proto fcgi\n", "server afcgi1 ${upstream} proto fcgi\n" },
    }), { port = port, upstream = upstream })
    local path = M.write(prefix, "haproxy.cfg", conf)
    local pidfile, log = prefix .. "/haproxy.pid", prefix .. "/haproxy.log"
    -- -D returns once the configuration is loaded and the daemon forked;
    -- HAProxy's own messages (alerts, a failed start) go to haproxy.log.
    return M.daemon("haproxy", ("/usr/sbin/haproxy -D -p %s -f %s >%s 2>&1")
        :format(shq(pidfile), shq(path), shq(log)), pidfile, port, log)
end

return M
