-- GET /{code} over the codes in $CODES (one per line), in random order.
local codes = {}
function init(args)
  for line in io.lines(os.getenv("CODES")) do codes[#codes + 1] = line end
  math.randomseed(os.time() + (args[1] and #args[1] or 0))
end
function request()
  return wrk.format("GET", "/" .. codes[math.random(#codes)])
end
