-- luacheck config: run `luacheck lua spec examples bench/lib` at the repository root.
std = "luajit"
max_line_length = 100

-- Specs and their helpers run under busted; their lines may be a bit wider.
files["spec"] = { std = "+busted", max_line_length = 120 }
-- The benchmarks' reporting program: its tables' heads are long lines (in long strings).
files["bench/lib"] = { max_line_length = 120, max_string_line_length = false }

-- Fixtures that are wrong on purpose: a syntax error the server must report,
-- an allocation loop whose tables are never read.
exclude_files = { "spec/fixtures/syntax_error.lua", "fuzz/**" }
files["spec/fixtures/faults.lua"] = { ignore = { "241" } }
-- The one module that replaces standard functions: coroutine.resume and
-- coroutine.wrap, with versions that can wait in afcgi calls.
files["lua/afcgi/coroutine.lua"] = { read_globals = { coroutine = { fields = {
    resume = { read_only = false }, wrap = { read_only = false },
    create = {}, yield = {}, status = {}, running = {}, isyieldable = {} } } } }
files["spec/fixtures/load_error.lua"] = { ignore = { "212" } }
