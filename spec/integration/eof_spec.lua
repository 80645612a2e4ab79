-- res:eof (OpenResty's ngx.eof, php-fpm's fastcgi_finish_request): the
-- response ends for the client, END_REQUEST goes, and the handler runs on
-- (spec/fixtures/eof.lua).
package.path = "lua/?.lua;" .. package.path
local helpers = require "helpers"

describe("res:eof", function()
    after_each(helpers.cleanup)

    it("ends the response for the client while the handler runs on", function()
        local srv = helpers.start_server("eof")
        local c = helpers.connect(srv)
        local r = c:request(1, "/eof")          -- returns only once END_REQUEST came
        assert.equal(200, r.status)
        assert.equal("early", r.body)
        assert.equal(0, r.app_status)
        local other = helpers.connect(srv)
        assert.equal("phase=after eof eof=1 write=nil,seen eof again=nil,seen eof",
                     other:request(1, "/state").body)
        -- the id is free again on that connection, while the old handler waits
        assert.equal("released", c:request(1, "/release").body)
        helpers.wait_until(function()
            return other:request(2, "/state").body:find("phase=released", 1, true)
        end, 5, "the handler to go on after its response ended")
    end)

    it("a deadline still stops a handler after res:eof, with a log line", function()
        local srv = helpers.start_server("eof")
        local c = helpers.connect(srv)
        assert.equal("bye", c:request(1, "/hang?timeout").body)
        srv:wait_log("after res:eof; its handler is stopped", 5)
        assert.equal("phase=none eof=nil write=nil,nil again=nil,nil", c:request(2, "/state").body)
    end)

    it("a stop waits for such a handler, then ends it cleanly", function()
        local srv = helpers.start_server("eof", { args = { "--shutdown-timeout", "0.5" } })
        local c = helpers.connect(srv)
        assert.equal("bye", c:request(1, "/hang").body)
        c:close()
        -- cleanup stops it and asserts a clean exit (and, on the sanitizer
        -- and valgrind builds, nothing leaked)
    end)
end)
