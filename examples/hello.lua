-- examples/hello.lua: the smallest app. Every path answers 200 "Hello, world!".
return function(req, res) -- luacheck: ignore req
    res:header("Content-Type", "text/plain")
    res:write("Hello, world!\n")
end
