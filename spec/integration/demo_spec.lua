-- examples/demo.sh, the README's quick start: afcgi serving examples/index.lua
-- behind a real front (nginx by default, HAProxy with FRONT=haproxy), checked
-- over HTTP, then stopped with SIGTERM as Ctrl-C would: both processes gone,
-- the scratch directory removed, exit status 0.
local helpers = require "helpers"
local cjson = require "cjson"
local psignal = require "posix.signal"
local unistd = require "posix.unistd"

local function run_demo(front)
    local port = helpers.free_port()
    -- the demo writes its own lines to stdout: route them into the log pipe
    local demo = helpers.spawn({ "bash", "-c", "exec examples/demo.sh 1>&2" },
        { env = { PORT = tostring(port), FRONT = front, AFCGI = helpers.bin() } })
    helpers.defer(function() demo:stop(psignal.SIGKILL, 5) end)
    demo:wait_log("open http://127%.0%.0%.1:" .. port .. "/", 30)
    local run = demo:log():match("logs in (%S+)")
    local pids = {}
    for pid in demo:log():gmatch("%(pid (%d+)%)") do pids[#pids + 1] = tonumber(pid) end
    assert.equal(2, #pids, demo:log())
    return demo, port, run, pids
end

for _, front in ipairs({ "nginx", "haproxy" }) do
    describe("examples/demo.sh with FRONT=" .. front, function()
        after_each(helpers.cleanup)

        it("serves the examples, then stops both processes and cleans up on SIGTERM", function()
            local demo, port, run, pids = run_demo(front)
            local hello = helpers.http_request(port, { method = "GET", path = "/hello" }, 10)
            assert.same({ 200, "Hello, world!\n" }, { hello.status, hello.body })
            local page = helpers.http_request(port, { method = "GET", path = "/" }, 10)
            assert.truthy(page.body:find('href="/chat/"', 1, true))
            local said = helpers.http_request(port, {
                method = "POST", path = "/chat/say", body = "name=demo&text=hello",
                headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
            }, 10)
            assert.equal(200, said.status, said.body)
            local poll = helpers.http_request(port, { method = "GET", path = "/chat/poll?since=0" }, 10)
            assert.equal("hello", cjson.decode(poll.body).messages[1].text)
            assert.is_truthy(unistd.access(run, "r"))
            local status = demo:stop(psignal.SIGTERM, 20)
            assert.equal(0, status, demo:log())
            assert.matches("demo: stopping", demo:log())
            for _, pid in ipairs(pids) do
                assert.is_not.equal(0, psignal.kill(pid, 0), "pid " .. pid .. " still running")
            end
            assert.is_nil(unistd.access(run, "r"))
        end)
    end)
end
