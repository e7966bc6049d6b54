-- Sliding window counter (DESIGN.md §4, Cloudflare-style), windows aligned to the Unix epoch,
-- in microseconds. KEYS[1]: "index:previous:current" counts. ARGV[4]: window W, ARGV[5]: limit.
-- At elapsed time e into the current window the estimate is prev·(W − e)/W + cur; a check of
-- `cost` is allowed iff prev·(W − e) + (cur + cost)·W ≤ limit·W, compared exactly: products of a
-- count (< 2^25) and a duration (< 2^51) are split into two 26-bit-based halves.
local window = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost
local B = 67108864 -- 2^26

-- x·y as {hi, lo} with x·y = hi·2^26 + lo, for min(x, y) < 2^27 and max(x, y) < 2^52.
local function mul(x, y)
  if x > y then
    x, y = y, x
  end
  local y_lo = y % B
  local y_hi = (y - y_lo) / B
  local low = x * y_lo
  local lo = low % B
  return {x * y_hi + (low - lo) / B, lo}
end
local function add(a, b)
  local lo = a[2] + b[2]
  local carry = 0
  if lo >= B then
    lo = lo - B
    carry = 1
  end
  return {a[1] + b[1] + carry, lo}
end
local function le(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] <= b[2])
end
-- floor(x·y / d) for a result known to be below 2^52 (double estimate, corrected exactly).
local function muldiv(x, y, d)
  local p = mul(x, y)
  local q = math.floor(x * y / d)
  while q > 0 and not le(mul(q, d), p) do
    q = q - 1
  end
  while le(mul(q + 1, d), p) do
    q = q + 1
  end
  return q
end

local index = tollgate_div(now, window)
local elapsed = now - index * window
local prev, cur = 0, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local si, sp, sc = string.match(stored, '^(%d+):(%d+):(%d+)$')
  si = tonumber(si)
  if si then
    sp, sc = tonumber(sp), tonumber(sc)
    if si == index then
      prev, cur = sp, sc
    elseif si == index - 1 then
      prev = sc
    elseif si > index then
      -- The clock went back: stand still at the start of the stored window (strictest).
      index, elapsed, prev, cur = si, 0, sp, sc
    end
  end
end
local weight = window - elapsed -- the previous window's share, in µs of W
local capacity = mul(limit, window)

-- Cells already counted by the estimate: cur + ceil(prev·weight / W).
local function used(p, c, w)
  local share = muldiv(p, w, window)
  if not le(mul(p, w), mul(share, window)) then
    share = share + 1
  end
  return c + share
end
-- Time (µs) after which the previous window's `p` cells weigh little enough that `free` more
-- cells fit: the least d with p·(w − d) ≤ free·W.
local function wait(p, w, free)
  if p == 0 then
    return 0
  end
  if le(mul(p, w), mul(free, window)) then
    return 0
  end
  -- Now free·W / p < w < 2^52: the largest w' with p·w' ≤ free·W.
  return w - muldiv(free, window, p)
end

if le(add(mul(prev, weight), mul(cur + cost, window)), capacity) then
  local reset = 0
  if tollgate_mode == 'c' and cost > 0 then
    cur = cur + cost
  end
  if cur > 0 then
    reset = weight + window -- until the current window's cells have fully slid out
  elseif prev > 0 then
    reset = weight
  end
  if tollgate_mode == 'c' and cost > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f:%.0f:%.0f', index, prev, cur), 'PX', tollgate_ttl_ms(reset))
  end
  return {1, math.max(limit - used(prev, cur, weight), 0), reset, 0}
end

local reset = weight
if cur > 0 then
  reset = weight + window
end
local retry
if cur + cost <= limit then
  -- Fits later in this window, once the previous window weighs less.
  retry = wait(prev, weight, limit - cur - cost)
else
  -- Not before the next window, where this window's cells become the previous ones.
  retry = weight + wait(cur, window, limit - cost)
end
return {0, math.max(limit - used(prev, cur, weight), 0), reset, retry}
