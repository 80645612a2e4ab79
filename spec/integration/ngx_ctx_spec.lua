-- ngx.ctx, ngx.get_phase and ngx.worker.count through afcgi.ngx, in a real
-- handler, its light thread and a timer (spec/fixtures/ngx_ctx.lua).
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"

local facts = helpers.facts

describe("ngx.ctx and ngx.get_phase", function()
    after_each(helpers.cleanup)

    it("give each request its own ctx, shared with its light threads; timers their own", function()
        local srv = helpers.start_server("ngx_ctx")
        local c = helpers.connect(srv)
        for id = 1, 2 do
            local t = facts(c:request(id, "/ctx"))
            assert.equal("init", t.load_phase)
            assert.equal("content", t.phase)
            assert.equal("true", t.fresh)
            assert.equal("true", t.same_as_req)
            assert.equal("content", t.thread_phase)
            assert.equal("handler", t.thread_saw)
            assert.equal("timer", t.timer_phase)
            assert.equal("true", t.timer_own)
            assert.equal("true", t.timer_replaced)
            assert.equal("handler", t.handler_kept)
            assert.equal("1", t.count)
        end
    end)

    it("count the workers under a master", function()
        local srv = helpers.start_server("ngx_ctx", { args = { "--workers", "2" } })
        assert.equal("2", facts(helpers.connect(srv):request(1, "/ctx")).count)
    end)
end)
