-- wrk script for bench/shop.sh: each wrk thread is one buyer on one connection
-- (run with -t N -c N), alternating POST /cart/items (one unit of its own product)
-- and POST /checkout with a fresh Idempotency-Key. One connection per thread keeps
-- the two requests strictly in sequence, so every checkout finds exactly one line.
-- Environment: BENCH_BUYERS = "token:product_id,token:product_id,..." (one per thread).
-- Script argument: a run label, so the keys of the warm-up and the run never collide.

local buyers = {}
for token, product in string.gmatch(os.getenv("BENCH_BUYERS") or "", "([^:,]+):(%d+)") do
  buyers[#buyers + 1] = { token = token, product = product }
end

local threads = {}
local next_id = 1

function setup(thread)
  local b = buyers[next_id]
  if b == nil then
    error("BENCH_BUYERS has fewer buyers than wrk threads")
  end
  thread:set("tid", next_id)
  thread:set("token", b.token)
  thread:set("product", b.product)
  threads[#threads + 1] = thread
  next_id = next_id + 1
end

local label, cart_req, n
local pending = {}
-- Counts per request kind and status: add_201, checkout_201, checkout_409, ...
counts = {}

function init(args)
  label = args[1] or "run"
  n = 0
  cart_req = wrk.format("POST", "/cart/items", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, '{"product_id":' .. product .. ',"quantity":1}')
end

function request()
  n = n + 1
  if n % 2 == 1 then
    pending[#pending + 1] = "add"
    return cart_req
  end
  pending[#pending + 1] = "checkout"
  return wrk.format("POST", "/checkout", {
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = label .. "-" .. tid .. "-" .. n,
  })
end

-- A success is classified by its body (an order has "total_cents", a cart line has
-- not): wrk sometimes asks request() for a request it never sends (seen once per run
-- or so), which shifts the queue of kinds by one. Errors fall back to the queue.
function response(status, headers, body)
  local kind = table.remove(pending, 1) or "unknown"
  if status >= 200 and status < 300 then
    kind = string.find(body or "", '"total_cents"', 1, true) and "checkout" or "add"
  elseif string.find(body or "", '"field":"cart"', 1, true) then
    kind = "checkout"
  end
  local k = kind .. "_" .. status
  counts[k] = (counts[k] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      total[k] = (total[k] or 0) + v
    end
  end
  local keys = {}
  for k in pairs(total) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    io.write(string.format("status %s %d\n", k, total[k]))
  end
  local secs = summary.duration / 1e6
  local orders = total["checkout_201"] or 0
  io.write(string.format("checkouts %d in %.3f s\n", orders, secs))
  io.write(string.format("orders/s %.2f\n", orders / secs))
end
