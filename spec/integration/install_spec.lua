-- Installing with luarocks: `luarocks make rocks/afcgi-scm-1.rockspec` into
-- a temporary tree with no rocks server (and no network where unshare -n
-- works), then the installed afcgi, started from an empty directory, serving
-- a FastCGI request with the Lua modules of that tree.
--
-- The build runs in a copy of the checkout (Makefile, src, lua, rocks), so it
-- never rewrites ./afcgi or build/ under other specs running at the same time.
local helpers = require "helpers"
local fc = require "fcgi_client"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"

local ROOT = unistd.getcwd()         -- busted runs from the checkout
local BUILD_TIMEOUT = 300            -- seconds for the whole luarocks make

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs cmd with /bin/sh; returns its exit status and its output (both streams).
local function sh(cmd)
    local p = assert(io.popen("( " .. cmd .. " ) 2>&1; echo \"exit=$?\""))
    local out = p:read("*a")
    p:close()
    local code = tonumber(out:match("exit=(%d+)%s*$"))
    return code, (out:gsub("exit=%d+%s*$", ""))
end

local function exists(path) return unistd.access(path) == 0 end

describe("luarocks make rocks/afcgi-scm-1.rockspec", function()
    local tmp, tree, rundir, lr_status, lr_out, offline

    setup(function()
        tmp = assert(stdlib.mkdtemp("/tmp/afcgi-install-XXXXXX"))
        tree, rundir = tmp .. "/tree", tmp .. "/run"
        local src = tmp .. "/src"
        assert(sh(("mkdir -p %s %s %s/empty-server && cp -R Makefile src lua rocks %s/")
                  :format(q(src), q(rundir), q(tmp), q(src))) == 0)
        -- No network namespace: luarocks cannot reach anything even if it tried.
        offline = sh("unshare -n true") == 0
        lr_status, lr_out = sh(("cd %s && timeout %d %s luarocks --lua-version 5.1 "
            .. "--only-server=%s make --tree %s rocks/afcgi-scm-1.rockspec")
            :format(q(src), BUILD_TIMEOUT, offline and "unshare -n" or "",
                    q(tmp .. "/empty-server"), q(tree)))
    end)

    teardown(function()
        if tmp then sh("rm -rf " .. q(tmp)) end
    end)

    after_each(helpers.cleanup)

    -- Starts the tree's afcgi on app with cwd rundir (an empty directory) and
    -- without AFCGI_LUA_DIR (which would point it at another lua/), so the
    -- checkout's lua/ cannot be found by accident.
    local function start_installed(app)
        local old_bin, old_dir = os.getenv("AFCGI_BIN"), os.getenv("AFCGI_LUA_DIR")
        stdlib.setenv("AFCGI_BIN", tree .. "/bin/afcgi")
        stdlib.setenv("AFCGI_LUA_DIR", nil)
        assert(unistd.chdir(rundir))
        local ok, srv = pcall(helpers.start_server, app)
        assert(unistd.chdir(ROOT))
        stdlib.setenv("AFCGI_BIN", old_bin)
        stdlib.setenv("AFCGI_LUA_DIR", old_dir)
        if not ok then error(srv, 2) end
        return srv
    end

    it("installs bin/afcgi and share/lua/5.1/afcgi/*.lua without a rocks server", function()
        assert(lr_status == 0, ("luarocks make failed (exit %s, network %s):\n%s")
               :format(tostring(lr_status), offline and "off" or "on", lr_out))
        assert.truthy(lr_out:find("afcgi scm-1 is now installed in " .. tree, 1, true), lr_out)
        assert.equal(0, unistd.access(tree .. "/bin/afcgi", "x"))
        local _, head = sh("head -c 4 " .. q(tree .. "/bin/afcgi"))
        assert.equal("\127ELF", head)                  -- the binary, not a Lua wrapper script
        local n = 0
        for name in io.popen("cd lua/afcgi && ls *.lua"):lines() do
            n = n + 1
            assert.is_true(exists(tree .. "/share/lua/5.1/afcgi/" .. name), name .. " not installed")
        end
        assert.is_true(n >= 2)                          -- init.lua and request.lua at least
        local code, list = sh(("luarocks --lua-version 5.1 --tree %s list --porcelain"):format(q(tree)))
        assert.equal(0, code)
        assert.truthy(list:find("afcgi\tscm%-1\tinstalled"), list)
    end)

    it("serves examples/hello.lua from another directory with the installed binary", function()
        assert(lr_status == 0, "luarocks make failed:\n" .. tostring(lr_out))
        local srv = start_installed(ROOT .. "/examples/hello.lua")
        local exe = unistd.readlink("/proc/" .. srv.pid .. "/exe")
        assert.equal(stdlib.realpath(tree .. "/bin/afcgi"), exe)
        assert.equal(stdlib.realpath(rundir), unistd.readlink("/proc/" .. srv.pid .. "/cwd"))
        local c = helpers.connect(srv)
        local r = c:request(1, fc.cgi_params("GET", "/"))
        assert.same({ 200, "text/plain", "Hello, world!\n", 0 },
                    { r.status, r.headers["content-type"], r.body, r.app_status })
    end)

    it("loads the afcgi modules from the tree, not from the checkout", function()
        assert(lr_status == 0, "luarocks make failed:\n" .. tostring(lr_out))
        -- The probe reports the file req.read_body (lua/afcgi/request.lua)
        -- was compiled from and where require "afcgi" resolves.
        local probe = tmp .. "/probe.lua"
        local f = assert(io.open(probe, "w"))
        f:write([[
return function(req, res)
    res:header("Content-Type", "text/plain")
    res:write(debug.getinfo(req.read_body, "S").source:sub(2), "\n",
              package.searchpath("afcgi", package.path) or "none", "\n",
              package.searchpath("afcgi.http", package.path) or "none", "\n",
              package.searchpath("afcgi.ngx", package.path) or "none", "\n")
end
]])
        f:close()
        local srv = start_installed(probe)
        local c = helpers.connect(srv)
        local r = c:request(1, fc.cgi_params("GET", "/"))
        assert.equal(200, r.status)
        local request_src, init_src, http_src, ngx_src =
            r.body:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
        assert.equal(stdlib.realpath(tree .. "/share/lua/5.1/afcgi/request.lua"),
                     stdlib.realpath(request_src))
        assert.equal(stdlib.realpath(tree .. "/share/lua/5.1/afcgi/init.lua"),
                     stdlib.realpath(init_src))
        -- the outbound modules are part of the rock too
        assert.equal(stdlib.realpath(tree .. "/share/lua/5.1/afcgi/http.lua"),
                     stdlib.realpath(http_src))
        assert.equal(stdlib.realpath(tree .. "/share/lua/5.1/afcgi/ngx.lua"),
                     stdlib.realpath(ngx_src))
    end)
end)
