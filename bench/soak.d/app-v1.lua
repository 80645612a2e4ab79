-- bench/soak.d/app-v1.lua: version 1 of the soak app (see soak_app.lua).
return require("soak_app").new{ version = "v1", json_items = 8 }
