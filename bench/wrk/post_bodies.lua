-- wrk script for bench.load: POST pre-built bodies, round-robin, and print a JSON summary line.
-- Usage: wrk ... -s bench/wrk/post_bodies.lua <url> -- <path> <content-type> <body file>...
-- Each request is formatted once in init(), so the load generator does no per-request encoding.
local requests_ = {}
local next_ = 0

function init(args)
  local path, content_type = args[1], args[2]
  for i = 3, #args do
    local f = assert(io.open(args[i], "rb"))
    local body = f:read("*a")
    f:close()
    requests_[#requests_ + 1] = wrk.format("POST", path, {["Content-Type"] = content_type}, body)
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
