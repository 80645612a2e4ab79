-- afcgi from a checkout, no rocks server needed. From the repository root:
--
--     luarocks --lua-version 5.1 make rocks/afcgi-scm-1.rockspec
--     luarocks --lua-version 5.1 make --tree /opt/afcgi rocks/afcgi-scm-1.rockspec
--
-- The Makefile builds ./afcgi (pkg-config luajit libevent; `make deps` installs
-- them on Debian) and `make install` puts it into the tree's bin/ and
-- lua/afcgi/*.lua into the tree's share/lua/5.1/afcgi/. The binary looks for
-- its modules there, in ../share/lua/5.1 next to itself, so the rock is for
-- Lua 5.1 (LuaJIT) trees only: a luarocks configured for 5.2+ (Debian's
-- default when lua5.2 is installed) refuses it instead of deploying the
-- modules to share/lua/5.x where afcgi would not find them; pass
-- --lua-version 5.1.
rockspec_format = "3.0"
package = "afcgi"
version = "scm-1"

source = {
   url = "./",   -- `luarocks make` builds the checkout it is run from
}

description = {
   summary = "Multiplexing FastCGI application server running Lua handlers",
   detailed = [[
afcgi is a FastCGI 1.0 application server in C on libevent with LuaJIT: one
process multiplexes many requests over each web server connection, and every
request runs its Lua handler in its own coroutine.
]],
   license = "MIT",
   labels = { "fastcgi", "server", "luajit" },
}

-- The server embeds LuaJIT (linked through pkg-config, not a rock) and needs
-- no other rock; examples/echo.lua uses lua-cjson, which is not required.
dependencies = {
   "lua ~> 5.1",
}

build = {
   type = "make",
   build_target = "afcgi",
   -- Not CFLAGS: on make's command line it would replace the Makefile's own
   -- flags (include paths, -std). luarocks' CFLAGS go to OPT instead.
   build_variables = {
      OPT = "$(CFLAGS)",
   },
   install_target = "install",
   -- luarocks installs into the rock's directory and then deploys bin/ to
   -- TREE/bin and lua/ to TREE/share/lua/5.1.
   install_variables = {
      PREFIX = "$(PREFIX)",
      BINDIR = "$(BINDIR)",
      LUADIR = "$(LUADIR)",
   },
}
