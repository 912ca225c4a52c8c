-- wrk script for bench/fault-drill.sh: counts the answers by status in every thread and, at the
-- end, prints one machine-readable line with the totals and wrk's socket errors.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, non2xx, by = {}, 0, {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    if status < 200 or status > 299 then non2xx = non2xx + n end
    table.insert(by, string.format("%d:%d", status, n))
  end
  table.sort(by)
  local e = summary.errors
  io.write(string.format(
    "FAULT requests=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d " ..
    "p99_us=%d max_us=%d statuses=%s\n",
    summary.requests, non2xx, e.connect, e.read, e.write, e.timeout,
    latency:percentile(99), latency.max, table.concat(by, ",")))
end
