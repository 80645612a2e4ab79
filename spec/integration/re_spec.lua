-- afcgi.re, OpenResty's ngx.re on PCRE2, through the real server: the
-- README's examples, OpenResty's own PCRE2 error strings, the same calls
-- inside Debian's nginx lua module and afcgi compared (a fixed list and
-- random patterns), and hostile input: catastrophic patterns, huge
-- subjects, invalid UTF-8, bad patterns, errors and yields in replacement
-- functions, many distinct cached patterns.
local helpers = require "helpers"
local fc = require "fcgi_client"
local socket = require "socket"
local ngx_eval = require "ngx_eval"

local lit = ngx_eval.lit

-- The results of expressions run by the eval fixture over connection c.
local function evaluator(c)
    local id = 0
    return function(exprs, timeout)
        local code = ngx_eval.calls(exprs)
        id = id + 1
        local r = c:request(id, fc.cgi_params("POST", "/", nil, #code), code,
                            { timeout = timeout or 30 })
        assert.equal(200, r.status, r.body)
        local lines = {}
        for l in (r.body .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
        return lines
    end
end

describe("afcgi.re: OpenResty's documented behaviour", function()
    local srv, eval
    before_each(function()
        -- its huge-subject calls run long without yielding under valgrind
        srv = helpers.start_server("ngx_eval", { args = { "--cpu-timeout", "120" } })
        eval = evaluator(helpers.connect(srv))
    end)
    after_each(helpers.cleanup)

    it("match: captures, named captures, unmatched groups as false, options, ctx.pos", function()
        assert.same({
            '{[0]="1234"}',
            '{[0]="1234",[1]="1",[2]="234",["remaining"]="234"}',
            '{[0]="hello",[1]=false,[2]="hello",[3]=false,["named"]=false}',
            '{[0]="hello"}',
            '{[0]="hello, 美好",[1]="美好"}',
            '{[0]="1234"}, 5',
            '{[0]="234"}, 5',
            '{[0]="hello, world",[1]="hello",[2]="world",["named"]={[1]="hello",[2]="world"}}',
            'nil',
        }, eval {
            'ngx.re.match("hello, 1234", "[0-9]+")',
            'ngx.re.match("hello, 1234", "([0-9])(?<remaining>[0-9]+)")',
            'ngx.re.match("hello, world", "(world)|(hello)|(?<named>howdy)")',
            'ngx.re.match("hello, world", "HEL LO", "ix")',
            'ngx.re.match("hello, 美好生活", "HELLO, (.{2})", "iu")',
            '(function() local ctx = {} local m = ngx.re.match("1234, hello", "[0-9]+", "", ctx) ' ..
                'return m, ctx.pos end)()',
            '(function() local ctx = { pos = 2 } local m = ngx.re.match("1234, hello", "[0-9]+", "", ' ..
                'ctx) return m, ctx.pos end)()',
            [[ngx.re.match("hello, world", "(?<named>\\w+), (?<named>\\w+)", "D")]],
            'ngx.re.match("hello", "x")',
        })
    end)

    it("find, gmatch, sub and gsub, with templates and functions", function()
        assert.same({
            '8, 11', '9, 11', 'nil',
            '{[1]={[0]="hello",[1]="hello"},[2]={[0]="world",[1]="world"}}',
            '"hello, [12][1]34", 1', '"hello, 100234", 1', '"hello, $234", 1',
            '"hello, [12][1]34", 1',
            '"[hello,h], [world,w]", 2', '"[hello,h], [world,w]", 2',
            '"abc", 0',
        }, eval {
            'ngx.re.find("hello, 1234", "([0-9]+)", "jo")',
            'ngx.re.find("hello, 1234", "([0-9])([0-9]+)", "jo", nil, 2)',
            'ngx.re.find("hello", "x")',
            '(function() local it = ngx.re.gmatch("hello, world!", "([a-z]+)", "i") local r = {} '
                .. 'for m in it do r[#r + 1] = m end return r end)()',
            'ngx.re.sub("hello, 1234", "([0-9])[0-9]", "[$0][$1]")',
            'ngx.re.sub("hello, 1234", "[0-9]", "${0}00")',
            'ngx.re.sub("hello, 1234", "[0-9]", "$$")',
            'ngx.re.sub("hello, 1234", "( [0-9] ) [0-9]", function(m) return "[" .. m[0] .. "][" .. ' ..
                'm[1] .. "]" end, "x")',
            'ngx.re.gsub("hello, world", "([a-z])[a-z]+", "[$0,$1]", "i")',
            'ngx.re.gsub("hello, world", "([a-z])[a-z]+", function(m) return "[" .. m[0] .. "," .. ' ..
                'm[1] .. "]" end, "i")',
            'ngx.re.gsub("abc", "x", "-")',
        })
    end)

    it("a lexer: ctx.pos with the anchored option", function()
        assert.same({ '"num:12 op:+ num:345 op:* id:x"' }, eval { [[(function()
            local s, ctx, out = "12+345*x", { pos = 1 }, {}
            while ctx.pos <= #s do
                local m = ngx.re.match(s, "(?<num>[0-9]+)|(?<op>[-+*/])|(?<id>[a-z]+)", "ajo", ctx)
                if not m then return "stuck at " .. ctx.pos end
                out[#out + 1] = m.num and "num:" .. m.num or m.op and "op:" .. m.op or "id:" .. m.id
            end
            return table.concat(out, " ")
        end)()]] })
    end)

    it("errors as OpenResty on PCRE2 returns them (lua-nginx-module's t/034-match.t, t/047-match-jit.t)", function()
        assert.same({
            'nil, "pcre2_compile() failed: missing closing parenthesis in \\"(abc\\""',
            'nil, nil, "pcre2_compile() failed: missing closing parenthesis in \\"(abc\\""',
            'nil, "pcre2_compile() failed: missing closing parenthesis in \\"(abc\\""',
            'nil, nil, "pcre2_compile() failed: missing closing parenthesis in \\"(abc\\""',
            'nil, "pcre2_compile() failed: quantifier does not follow a repeatable item in \\"a**\\" at \\"*\\""',
            'nil, "pcre_exec() failed: -4"',
            '127, "pcre2_compile() failed: missing closing parenthesis in \\"xxxx"',
            'nil, nil, "failed to compile the replacement template"',
            'nil, nil, "nth out of bound"',
            'error: unknown flag "z" (flags "az")',
        }, eval {
            'ngx.re.match("x", "(abc")', 'ngx.re.find("x", "(abc")',
            'ngx.re.gmatch("x", "(abc")', 'ngx.re.gsub("x", "(abc", "")',
            'ngx.re.match("x", "a**")',
            'ngx.re.match(string.sub("你好", 1, 4), "你好", "u")',   -- TEST 42: bad UTF-8
            '(function() local _, err = ngx.re.match("x", ("x"):rep(2^20) .. "(") return #err, err:sub(1, 60) end)()',
            'ngx.re.sub("abc", "b", "$")',
            'ngx.re.find("abc", "(b)", "", nil, 2)',
            'ngx.re.match("x", "x", "az")',
        })
    end)

    it("a catastrophic pattern fails fast with the match limit's error, and others are served", function()
        local srv2_c = helpers.connect(srv)
        local code = ngx_eval.calls {
            '(function() local r = {} for i = 1, 10 do local m, err = ngx.re.match(string.rep("a", ' ..
                '30) .. "b", "(a+)+$", "jo") '
                .. 'r[#r + 1] = tostring(m) .. " " .. err end return table.concat(r, "|") end)()',
            -- interpreted, under a lower limit set for this code generation
            '(function() local old = ngx.re.opt("match_limit") ngx.re.opt("match_limit", 100000) '
                .. 'local s, n, err = ngx.re.gsub(string.rep("a", 40) .. "b", "(a+)+$", "x") '
                .. 'ngx.re.opt("match_limit", old) return s, n, err end)()',
        }
        local t0 = socket.gettime()
        local c1 = helpers.connect(srv)
        c1:begin(1)
        c1:params(1, fc.cgi_params("POST", "/", nil, #code))
        c1:stdin(1, code)
        c1:stdin(1, "")
        local other = evaluator(srv2_c)({ 'ngx.md5("still served")' })
        local r = c1:read_response(1, 30)
        local elapsed = socket.gettime() - t0
        assert.same({ '"' .. ("nil pcre_exec() failed: -47|"):rep(10):sub(1, -2) .. '"',
                      'nil, nil, "pcre_exec() failed: -47"' },
                    { r.body:match("^([^\n]*)\n([^\n]*)$") })
        assert.same({ '"2149c09ef47e6a2d569cd6df64c64cd0"' }, other)
        assert.is_true(elapsed < (helpers.asan and 30 or 3), elapsed .. " s")
    end)

    it("huge subjects: 8 MiB scanned, 2 MiB rewritten; deep backtracking meets the JIT stack and heap limits",
       function()
        local lines = eval({
            '(function() local s = string.rep("ab", 2^20) local r, n = ngx.re.gsub(s, "b", "cd", "jo") '
                .. 'return #r, n, r:sub(-4) end)()',
            '(function() local s = string.rep("x", 8 * 2^20) .. "needle" return ngx.re.find(s, "ne+dle", "jo") end)()',
            '(function() local n = 0 for m in ngx.re.gmatch(string.rep("ab ", 2^18), "[a-z]+", "jo") ' ..
                'do n = n + 1 end return n end)()',
            'ngx.re.match(string.rep("a", 2^20), "^(a|b)*$", "jo")',
            'ngx.re.match(string.rep("a", 2^20), "^(a|b)*$")',
        }, 120)
        assert.same({ '3145728, 1048576, "dacd"', "8388609, 8388614", "262144",
                      'nil, "pcre_exec() failed: -46"', 'nil, "pcre_exec() failed: -63"' }, lines)
    end)

    it("checks a subject's UTF-8 once per call, not at every match (gsub stays linear)", function()
        local lines = eval({
            '(function() local s = string.rep("é", 2^17) local t = os.clock() local r, n = ' ..
                'ngx.re.gsub(s, "é", "e", "u") '
                .. 'return #r, n, os.clock() - t end)()',
            'ngx.re.gsub("aé\\255", "é", "e", "u")',
            'ngx.re.gsub("a\\255é", "é", "e", "U")',
        }, 120)
        local len, n, secs = lines[1]:match("^(%d+), (%d+), ([%d.e-]+)$")
        assert.same({ "131072", "131072" }, { len, n })
        assert.is_true(tonumber(secs) < (helpers.asan and 30 or 1), secs .. " s")
        assert.same({ 'nil, nil, "pcre_exec() failed: -23"', 'nil, nil, "pcre_exec() failed: -23"' },
                    { lines[2], lines[3] })
    end)

    it("replacement functions: errors propagate, nested calls work, a yield is refused", function()
        assert.same({
            'error: boom',
            '"aQc", 1',
            '"[x][y]", 2',
        }, eval {
            'ngx.re.gsub("abc", "b", function() error("boom") end)',
            'ngx.re.gsub("abc", "b", function(m) return ngx.re.gsub(m[0], "b", function() return ' ..
                'ngx.re.sub("q", "q", "Q") end) end)',
            'ngx.re.gsub("xy", "[a-z]", function(m) local r = ngx.re.match(m[0], "(.)", "jo") return ' ..
                '"[" .. r[1] .. "]" end, "jo")',
        })
        local yield = eval { 'ngx.re.gsub("ab", "a", function() ngx.sleep(0.001) return "x" end)' }
        assert.matches("^error: attempt to yield across", yield[1])
        assert.same({ '"ok"' }, eval { '"ok"' })
    end)

    it("keeps at most cache_max_entries patterns compiled with o, per code generation", function()
        assert.same({ "true, 1024", "true", "10", "1024, 0" }, eval {
            '(function() for i = 1, 3000 do ngx.re.find("x", "x" .. i, "o") end '
                .. 'return ngx.re.opt("cache_entries") <= 1024, ngx.re.opt("cache_max_entries") end)()',
            '(function() for i = 1, 100 do assert(ngx.re.find("hot", "hot", "jo")) ngx.re.find("x", ' ..
                '"c" .. i, "o") end return true end)()',
            '(function() ngx.re.opt("cache_max_entries", 10) for i = 1, 100 do ngx.re.find("x", "y" .. i, "o") end '
                .. 'local n = ngx.re.opt("cache_entries") ngx.re.opt("cache_max_entries", 1024) return n end)()',
            'ngx.re.opt("cache_max_entries"), ngx.re.opt("cache_entries")',
        })
    end)

    it("keeps its settings and cache per code generation: a reload starts afresh", function()
        local before = eval {
            'require("afcgi.core").generation',
            '(function() ngx.re.opt("cache_max_entries", 7) ngx.re.opt("match_limit", 1000) '
                .. 'for i = 1, 20 do ngx.re.find("x", "p" .. i, "o") end '
                .. 'return ngx.re.opt("cache_entries") <= 7, ngx.re.match(("a"):rep(20) .. "b", "(a+)+$") end)()',
        }
        assert.same({ "1", 'true, nil, "pcre_exec() failed: -47"' }, before)
        local mark = srv:mark()
        require("posix.signal").kill(srv.pid, require("posix.signal").SIGHUP)
        srv:wait_log("reloaded .*: generation 2 serves new requests", 10, mark)
        assert.same({ "2", "1024, 0, 10000000", '{[0]="aaaaaaaaaaaaaaaaaaaab",[1]="aaaaaaaaaaaaaaaaaaaa"}' }, eval {
            'require("afcgi.core").generation',
            'ngx.re.opt("cache_max_entries"), ngx.re.opt("cache_entries"), ngx.re.opt("match_limit")',
            'ngx.re.match(("a"):rep(20) .. "b", "(a+)b$")',
        })
    end)

    it("goes beyond OpenResty where it fails: ${name} templates, empty matches in UTF-8 mode", function()
        assert.same({ '"a[b]c", 1', '"a[]c", 1', '"-a-é-b-", 4', "4" }, eval {
            'ngx.re.sub("abc", "(?<x>b)", "[${x}]")',
            'ngx.re.sub("abc", "(?<x>b)|(?<y>c)", "[${y}]")',
            'ngx.re.gsub("aéb", "", "-", "u")',
            '(function() local n = 0 for _ in ngx.re.gmatch("aéb", "", "u") do n = n + 1 end return n end)()',
        })
    end)
end)

describe("afcgi.re without afcgi.ngx", function()
    after_each(helpers.cleanup)

    it("is require 'afcgi.re', and sets no global", function()
        local srv = helpers.start_server("re_plain")
        local r = helpers.connect(srv):request(1, "/")
        assert.equal("1234 234 a+b+c 2 5d41402abc4b2a76b9719d911017c592 nil", r.body)
    end)
end)

describe("afcgi.re against Debian's nginx lua module, same inputs", function()
    local pair
    before_each(function()
        math.randomseed(13)
        pair = ngx_eval.start()
    end)
    after_each(helpers.cleanup)

    it("a list of cases: options, ctx, nth, empty matches, templates, D, J", function()
        local cases = {
            'ngx.re.match("abc", "", "", {pos=4})', 'ngx.re.match("abc", "c", "", {pos=-5})',
            'ngx.re.match("abc", "c", nil, {pos=2.7})', 'ngx.re.find("abc", "(b)(x)?", "", nil, 2)',
            'ngx.re.find("abc", "(b)(x)?", "", nil, -1)', 'ngx.re.match(nil, "a")', 'ngx.re.match({}, "b")',
            [[ngx.re.match("hello, world", "(?<n>\\w+)|(?<n>x)", "D")]],
            'ngx.re.match("a\\nb", "^b", "m")', 'ngx.re.match("a\\nb", "a.b", "s")',
            'ngx.re.match("xab", "ab", "a")', 'ngx.re.match("abab", "ab", "a", {pos=3})',
            [[ngx.re.match("ab", "\\u0061", "J")]], 'ngx.re.match("ab", "a", "d")',
            'ngx.re.match("abc", "b", "", nil, {5, x=1})',
            '(function() local it = ngx.re.gmatch("abc", "x") return it(), it(), it() end)()',
            '(function() local it = ngx.re.gmatch("baaac", "a*") local r = {} for m in it do r[#r + ' ..
                '1] = m[0] end return r end)()',
            'ngx.re.gsub("abc", "", "-")', 'ngx.re.gsub("baaac", "a*", "-")', 'ngx.re.gsub("baaac", "a*?", "-")',
            'ngx.re.gsub("abc", "(?=b)|b", "-")', 'ngx.re.gsub("a\\nb\\n", "$", "-", "m")',
            'ngx.re.gsub("a\\r\\nb", "", "-")',
            'ngx.re.sub("abc", "(b)", "$2")', 'ngx.re.sub("abc", "(b)", "${1")', 'ngx.re.sub("abc", "(b)", "$x")',
            'ngx.re.sub("abc", "(b)", "\\\\$1")', 'ngx.re.sub("abc", "(b)", "[$01][${01}][$1a][$${1}][$99999999999]")',
            'ngx.re.sub("abcdefghijklmnop", "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)", "$10|$11|${11}")',
            'ngx.re.sub("abc", "(b)", "[$0${0}$1$$]")', 'ngx.re.sub("abc", "(b)", "[${ 1}]")',
            'ngx.re.sub("abc", "b", function() return 5 end)', 'ngx.re.sub("abc", "b", function() return nil end)',
            'ngx.re.sub("abc", "b", 42)', 'ngx.re.gsub("abc", "b", nil)', 'ngx.re.gsub("a.b.c", "\\\\.", "%")',
            'ngx.re.match("abc", "(?<a>.)(?<a>.)?", "D")', 'ngx.re.match("abc", "(?<a>x)?(?<a>.)", "D")',
            'ngx.re.match("abc", "(?|(?<a>x)|(?<a>b))")', [[ngx.re.match("a", "\\p{L}", "u")]],
            'ngx.re.match("é", "^.$")', 'ngx.re.match("é", "^.$", "u")',
            '(function() local c = {} ngx.re.find("hello", "l", "", c) return c end)()',
            '(function() local c = {pos=9} ngx.re.match("hello", "l", "", c) return c end)()',
            '(function() local c = {pos=2} ngx.re.match("hello", "x", "", c) return c end)()',
            'ngx.re.gsub("abcabc", "b", "[$0]", "d")', 'ngx.re.match("abcabc", "(a)(.*)c", "d")',
            'ngx.re.find("abcabc", "a.*c", "d", nil, 1)', 'ngx.re.gsub("aaa", "a", "b", "a")',
        }
        -- the patterns lua-resty-http matches URIs, header lines and no_proxy lists with
        local uri = [[^(?:(http[s]?):)?//((?:[^\[\]:/\?]+)|(?:\[.+\]))(?::(\d+))?([^\?]*)\??(.*)]]
        for _, u in ipairs { "https://user@example.com:8443/a/b?x=1&y=2", "http://[::1]/p", "//example.com",
                             "ftp://x", "http://h:99999/" } do
            cases[#cases + 1] = ("ngx.re.match(%s, %s, 'jo')"):format(lit(u), lit(uri))
        end
        for _, c in ipairs {
            [[ngx.re.match("Content-Type:  text/html; q=1", "([^:\\s]+):\\s*(.*)", "jo")]],
            [[ngx.re.find("  \t ", "^\\s*$", "jo")]],
            [[ngx.re.gsub("/a b/c\td", "\\s", "%20", "jo")]],
            [[(function() local r = {} for m in ngx.re.gmatch(".example.com,foo.org", "\\.?([^,]+)", "jo") do ]]
                .. [[r[#r + 1] = m[1] end return r end)()]],
            [[ngx.re.sub("www.example.com", "^[^.]+\\.", "", "jo")]],
        } do cases[#cases + 1] = c end
        assert.equal(#cases, pair:same(cases))
    end)

    it("random patterns over random subjects: match, find with ctx and nth, gmatch, sub, gsub", function()
        local names = 0
        local function pattern(depth)
            local atoms = { "a", "b", ".", "[ab]", "[^a]", "\\w", "x", "A", "\\s" }
            local quants = { "", "", "", "*", "+", "?", "{1,2}", "*?", "+?", "{2}" }
            local out = {}
            for i = 1, math.random(1, 3) do
                local piece
                local roll = math.random()
                if depth < 2 and roll < 0.25 then
                    piece = "(" .. pattern(depth + 1) .. ")"
                elseif depth < 2 and roll < 0.35 then
                    piece = "(?:" .. pattern(depth + 1) .. ")"
                elseif depth < 2 and roll < 0.42 then
                    names = names + 1
                    piece = "(?<n" .. names .. ">" .. pattern(depth + 1) .. ")"
                else
                    piece = atoms[math.random(1, #atoms)]
                end
                out[i] = piece .. quants[math.random(1, #quants)]
            end
            local p = table.concat(out)
            if math.random() < 0.15 then p = p .. "|" .. pattern(depth + 1) end
            if depth == 0 and math.random() < 0.1 then p = "^" .. p end
            if depth == 0 and math.random() < 0.1 then p = p .. "$" end
            return p
        end
        -- no "d": nginx's DFA workspace (100 ints) runs out on patterns ours does not
        local options = { "", "", "jo", "i", "m", "s", "a", "x", "u", "ij", "ms" }
        -- PCRE (nginx's) and PCRE2 word compile errors differently and number
        -- "DFA workspace full" -19 and -43: compare that there is one
        local extra = [[local function norm(...)
            local n, t = select("#", ...), { ... }
            for i = 1, n do
                if type(t[i]) == "string" and t[i]:find("^pcre2?_compile%(%) failed") then t[i] = "compile error" end
                if t[i] == "pcre_exec() failed: -19" or t[i] == "pcre_exec() failed: -43" then
                    t[i] = "dfa workspace"
                end
            end
            return unpack(t, 1, n)
        end]]
        local exprs = {}
        for _ = 1, 250 do
            local p, o = lit(pattern(0)), lit(options[math.random(1, #options)])
            local s = lit(((function()
                local t = {}
                for i = 1, math.random(0, 12) do
                    local k = math.random(1, 6)
                    t[i] = ("aabxA\n"):sub(k, k)
                end
                return table.concat(t)
            end)()))
            local pos, nth = math.random(0, 4), math.random(0, 2)
            exprs[#exprs + 1] = ("norm(ngx.re.match(%s, %s, %s))"):format(s, p, o)
            exprs[#exprs + 1] = ("(function() local ctx = { pos = %d } return norm(ngx.re.find(%s, " ..
                "%s, %s, ctx, %d)), ctx.pos end)()")
                                :format(pos, s, p, o, nth)
            exprs[#exprs + 1] = ("norm(ngx.re.gsub(%s, %s, '<$0|$1>', %s))"):format(s, p, o)
            exprs[#exprs + 1] = ("norm(ngx.re.sub(%s, %s, function(m) return '[' .. tostring(m[1]) .. ']' end, %s))")
                                :format(s, p, o)
            exprs[#exprs + 1] = ("(function() local it, err = ngx.re.gmatch(%s, %s, %s) if not it " ..
                "then return norm(err) end "
                                 .. "local r = {} for _ = 1, 50 do local m = it() if not m then " ..
                                     "break end r[#r + 1] = m end "
                                 .. "return r end)()"):format(s, p, o)
        end
        assert.equal(#exprs, pair:same(exprs, nil, extra))
    end)
end)
