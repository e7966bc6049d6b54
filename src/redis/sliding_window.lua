-- Sliding window counter (DESIGN.md §4, Cloudflare-style), windows aligned to the Unix epoch,
-- in microseconds. KEYS[1]: "index:previous:current" counts. ARGV[4]: window W, ARGV[5]: limit.
-- A clock behind the stored window stands still in it; more than one window back, only until
-- the key expires, within 3·W (as in fixed_window.lua).
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
local cap = nil
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
      -- 3·W: the longest TTL below (`reset_after` of a window at most one ahead).
      if si > index + 1 then
        cap = tollgate_ttl_left_us(KEYS[1], 3 * window)
      end
      if si == index + 1 or cap then
        index, elapsed, prev, cur = si, 0, sp, sc
      end
    end
  end
end
local weight = window - elapsed -- the previous window's share, in µs of W
local start = index * window
local capacity = mul(limit, window)

-- Cells the estimate counts: cur + ceil(prev·weight / W).
local function used(p, c, w)
  local share = muldiv(p, w, window)
  if not le(mul(p, w), mul(share, window)) then
    share = share + 1
  end
  return c + share
end
-- µs into a window after which `count` cells of the window before it weigh little enough for
-- `slack` more cells: W − min(⌊slack·W / count⌋, W).
local function earliest_fit(count, slack)
  if count == 0 or slack >= count then
    return 0
  end
  return window - muldiv(slack, window, count) -- slack·W / count < W here
end
-- A time bounded by when the key expires, if the clock is behind its window (`cap`).
local function capped(t)
  if cap and cap < t then
    return cap
  end
  return t
end
-- Time until the state is fresh: the end of the window after the newest non-empty one.
local function reset_after(p, c)
  local windows = 0
  if c > 0 then
    windows = 2
  elseif p > 0 then
    windows = 1
  end
  if windows == 0 then
    return 0
  end
  return capped(math.max(start + windows * window - now, 0))
end

if le(add(mul(prev, weight), mul(cur + cost, window)), capacity) then
  local remaining = limit - used(prev, cur + cost, weight)
  if tollgate_mode == 'c' and cost > 0 then
    cur = cur + cost
    local reset = reset_after(prev, cur)
    redis.call('SET', KEYS[1], string.format('%.0f:%.0f:%.0f', index, prev, cur), 'PX', tollgate_capped_px(tollgate_ttl_ms(reset)))
    return {1, remaining, reset, 0}
  end
  return {1, remaining, reset_after(prev, cur + cost), 0}
end

local target
if cur + cost <= limit then
  -- This window, once the previous window's weight has faded enough.
  target = start + earliest_fit(prev, limit - cur - cost)
else
  -- The next window, where this window's cells become the previous ones.
  target = start + window + earliest_fit(cur, limit - cost)
end
local retry = capped(math.max(target - now, 1))
return {0, math.max(limit - used(prev, cur, weight), 0), reset_after(prev, cur), retry}
