-- 90 % redirects, 9 % link creation (logged in with $COOKIE), 1 % link stats.
local codes = {}
local cookie = os.getenv("COOKIE")
local counter = 0
function init(args)
  for line in io.lines(os.getenv("CODES")) do codes[#codes + 1] = line end
end
function request()
  counter = counter + 1
  local r = math.random(100)
  local code = codes[math.random(#codes)]
  if r <= 90 then
    return wrk.format("GET", "/" .. code)
  elseif r <= 99 then
    return wrk.format("POST", "/api/links", { ["Content-Type"] = "application/json", ["Cookie"] = cookie },
      '{"url":"https://example.com/bench/' .. counter .. '"}')
  else
    return wrk.format("GET", "/api/links/" .. code)
  end
end
