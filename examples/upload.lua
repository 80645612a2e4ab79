-- examples/upload.lua: multipart/form-data uploads, never held whole in
-- memory.
--
--     ./afcgi --listen 127.0.0.1:9000 --max-body 100m examples/upload.lua
--
--   GET  /          an upload form
--   POST /upload    req:multipart(): fields as strings, the file in a
--                   temporary file; answers its name, size and first bytes
--   POST /stream    req:multipart(handlers): counts and checksums each file
--                   part as it arrives, refusing one over 10 MiB
-- Failures: 415 for another Content-Type, 413 past --max-body, 400 for a
-- malformed body, 422 when the form lacks the file.
local multipart = require "afcgi.multipart"

local MAX_FILE = 10 * 1048576

local FORM = [[<!DOCTYPE html><meta charset="utf-8"><title>upload</title>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input name="title" placeholder="title"> <input type="file" name="file">
  <button>Upload (temporary file)</button>
</form>
<form method="post" action="/stream" enctype="multipart/form-data">
  <input type="file" name="file" multiple> <button>Upload (streamed)</button>
</form>
]]

-- Status for an error from req:multipart.
local function status_of(err)
    if err == "not multipart/form-data" then return 415 end
    if err == "too large" or err == "file too large" then return 413 end
    return 400   -- "no boundary", "malformed multipart: ...", "too many parts", ...
end

local function upload(req, res)
    local form, err = req:multipart()
    if not form then
        return res:error(status_of(err), err)
    end
    local file = form.file
    if type(file) ~= "table" or not file.path then   -- missing, or a plain field
        multipart.remove(form)
        return res:error(422, "no file in the form")
    end
    -- The content is in file.path until multipart.remove (or os.rename it
    -- to keep it). Read a little back to show it is there.
    local f, ferr = io.open(file.path, "rb")
    if not f then
        multipart.remove(form)
        return res:error(500, ferr)
    end
    local head = f:read(16) or ""
    f:close()
    multipart.remove(form)
    res:header("Content-Type", "text/plain; charset=utf-8")
    res:write(("title: %s\nfile: %s (%s), %d bytes\nfirst bytes: %s\n"):format(
        type(form.title) == "string" and form.title or "-", file.filename,
        file.content_type or "no type", file.size,
        (head:gsub(".", function(c) return ("%02x "):format(c:byte()) end))))
end

local function stream(req, res)
    local files = {}
    local ok, err = req:multipart({
        part = function(part)
            if part.filename then
                part.size, part.sum = 0, 0
                files[#files + 1] = part
            end
        end,
        data = function(part, chunk)
            if not part.filename then return end   -- ignore other fields
            part.size = part.size + #chunk
            if part.size > MAX_FILE then
                return nil, "file too large"            -- stops the parser
            end
            local sum = part.sum
            for i = 1, #chunk, 4096 do sum = (sum + chunk:byte(i)) % 65521 end
            part.sum = sum
        end,
    })
    if not ok then
        return res:error(status_of(err), err)
    end
    if #files == 0 then
        return res:error(422, "no file in the form")
    end
    res:header("Content-Type", "text/plain; charset=utf-8")
    for _, p in ipairs(files) do
        res:write(("%s: %d bytes, sample sum %d\n"):format(p.filename, p.size, p.sum))
    end
end

return function(req, res)
    if req.method == "POST" and req.path == "/upload" then
        return upload(req, res)
    elseif req.method == "POST" and req.path == "/stream" then
        return stream(req, res)
    elseif req.path == "/" then
        res:header("Content-Type", "text/html; charset=utf-8")
        return res:write(FORM)
    end
    res:error(404)
end
