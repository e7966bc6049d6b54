-- tollgate: shared prelude of every script (prepended at build time, see script.rs).
-- All times are integers in microseconds since the Unix epoch. Lua 5.1 numbers are doubles, so
-- every quantity is kept below 2^53 (script.rs validates quotas so that it is): the arithmetic
-- below is then exact integer arithmetic.
--
-- Common ARGV: [1] mode ("c" check and consume, "p" peek), [2] cost, [3] explicit now in µs
-- ("" = the server's TIME; the explicit form exists for differential tests), [4] and [5] the
-- algorithm's parameters. Every script returns {allowed (1/0), remaining, reset_after µs,
-- retry_after µs}.
local function tollgate_now(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- floor(a / b) for integers 0 <= a, 1 <= b below 2^53: the double quotient can be off by one
-- near an integer, so it is corrected with exact products.
local function tollgate_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- With an explicit (test) time, state must outlive the gap between test time and real time:
-- keys then get an extra hour. With the server's clock the TTL is exact.
local tollgate_ttl_extra_ms = 0
if ARGV[3] ~= '' then
  tollgate_ttl_extra_ms = 3600000
end

-- A positive TTL in milliseconds covering `us` microseconds (Redis' PX unit), at least 1.
local function tollgate_ttl_ms(us)
  return math.max(1, math.ceil(us / 1000)) + tollgate_ttl_extra_ms
end

-- The key's PTTL (ms) as tollgate_ttl_left_us read it, when the script stands still under that
-- cap: a re-store then keeps (at most) this expiry, so standing still never extends the key's
-- life (PX of the capped time, rounded up, added 1 ms a write, until the TTL passed the bound
-- and the key read as fresh while it still held the window's count).
local tollgate_cap_pttl = nil
local function tollgate_capped_px(px)
  if tollgate_cap_pttl then
    return math.max(1, math.min(px, tollgate_cap_pttl)) -- PX 0 is refused
  end
  return px
end

-- For a key whose stored window is ahead of the clock (the clock went back, e.g. a wall-clock
-- step of the server, or the state was written on a finer window grid): the µs until Redis
-- removes it, by the TTL it was given under the clock that wrote it (rounded up, so the key is
-- gone by then). The scripts stand still in the stored window as in process, but no longer than
-- this: a clock that was years ahead must not lock the key for years, and the key is fresh once
-- it expires. `bound` is the longest TTL the script sets; a longer one (or none) was not set by
-- it (an earlier release re-stored such keys for as long as the clock had jumped): nil, and the
-- caller reads the key as fresh instead of as locked.
local function tollgate_ttl_left_us(key, bound)
  local left = redis.call('PTTL', key)
  if left < 0 then
    return nil
  end
  local us = (math.max(left - tollgate_ttl_extra_ms, 0) + 1) * 1000
  if us > bound + 2000 then -- 2 ms: TTLs are whole ms, rounded up, plus the +1 above
    return nil
  end
  tollgate_cap_pttl = left
  return us
end

local tollgate_mode = ARGV[1]
local tollgate_cost = tonumber(ARGV[2])
local tollgate_now_us = tollgate_now(ARGV[3])
