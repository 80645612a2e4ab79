-- luacheck config: run `luacheck lua spec examples bench/lib` at the repository root.
std = "luajit"
max_line_length = 100

-- Specs and their helpers run under busted; their lines may be a bit wider.
files["spec"] = { std = "+busted", max_line_length = 120 }
-- The benchmarks' reporting program: its table headers are long lines.
files["bench/lib"] = { max_line_length = 120 }

-- Fixtures that are wrong on purpose: a syntax error the server must report,
-- an allocation loop whose tables are never read.
exclude_files = { "spec/fixtures/syntax_error.lua", "fuzz/**" }
files["spec/fixtures/faults.lua"] = { ignore = { "241" } }
files["spec/fixtures/load_error.lua"] = { ignore = { "212" } }
