-- wrk script for bench.load: POST pre-built bodies, round-robin, and print a JSON summary line.
-- Usage: wrk ... -s bench/wrk/post_bodies.lua <url> -- <path> <content-type> [--assets=N] [--header=Name:value]...
--        <body file>...
-- Each request is formatted once in init(), so the load generator does no per-request encoding.
-- --assets=N: each body is sent once per asset (X-Asset: bench-1 .. bench-N, the assets in turn), so every
-- asset receives the bodies in order and no asset sees the same reading twice in a row.
-- --header=Name:value: a header every request carries (an API key), repeatable.
local requests_ = {}
local next_ = 0

function init(args)
  local path, content_type = args[1], args[2]
  local first, assets, extra = 3, 0, {}
  while args[first] and args[first]:sub(1, 2) == "--" do
    local option = args[first]
    if option:sub(1, 9) == "--assets=" then
      assets = tonumber(option:sub(10))
    elseif option:sub(1, 9) == "--header=" then
      local name, value = option:sub(10):match("^([^:]+):%s*(.*)$")
      assert(name, "--header needs Name:value, got " .. option)
      extra[name] = value
    else
      error("unknown option " .. option)
    end
    first = first + 1
  end
  local function headers(asset)
    local h = {["Content-Type"] = content_type}
    for name, value in pairs(extra) do h[name] = value end
    if asset then h["X-Asset"] = "bench-" .. asset end
    return h
  end
  for i = first, #args do
    local f = assert(io.open(args[i], "rb"))
    local body = f:read("*a")
    f:close()
    if assets > 0 then
      for a = 1, assets do
        requests_[#requests_ + 1] = wrk.format("POST", path, headers(a), body)
      end
    else
      requests_[#requests_ + 1] = wrk.format("POST", path, headers(nil), body)
    end
  end
  assert(#requests_ > 0, "no body files given")
end

function request()
  next_ = next_ % #requests_ + 1
  return requests_[next_]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,' ..
    '"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
