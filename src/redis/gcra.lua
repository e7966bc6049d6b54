-- GCRA (DESIGN.md §3; the same integer math as src/gcra.rs, in microseconds).
-- KEYS[1]: the key's state. ARGV[4]: emission interval T, ARGV[5]: tolerance burst·T.
-- The key expires when its TAT passes: a fresh key and an expired key are indistinguishable.
--
-- The state is the TAT and the tolerance it was written under, both decimal µs, as one decimal
-- number: "<tat>.0<tolerance>" (TAT 1700000000123456 under a 1 s tolerance is
-- "1700000000123456.01000000", 25 bytes: an embedded string in Redis' 48-byte size class up to
-- 10 tolerance digits, 2.7 h). The previous release reads it with tonumber(), as the TAT plus
-- less than 0.1, which rounds to the TAT exactly: doubles are 0.25 apart from 2^50 µs (2005) on,
-- and a stored TAT is never before the server's clock. So processes of both releases keep
-- sharing one limit during a rolling upgrade (with a separator such as ':' the previous release
-- would read every key this one wrote as fresh; with explicit test times before 2005 it would
-- read a fraction). Its writes, a bare TAT, read as written under this check's tolerance: the
-- previous behaviour.
local t = tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost

local stored = redis.call('GET', KEYS[1])
local tat, written_under = 0, tolerance
if stored then
  local tat_text, tolerance_text = string.match(stored, '^(%d+)%.0([1-9]%d*)$')
  if tat_text then
    tat, written_under = tonumber(tat_text), tonumber(tolerance_text)
  else
    tat = tonumber(stored) or 0
  end
end

-- ceil(a·b / c) for integers 0 <= a <= c, 1 <= c and 0 <= b, all at most 2^51, exactly: a·b
-- may reach 2^102, past the 2^53 a double holds exactly, so it is kept as three base-2^26
-- digits (each partial product below 2^52) and divided by c one bit at a time from the top, as
-- by hand. The remainder stays below c, so doubling it and adding a bit stays below 2^52; the
-- quotient is at most b (a <= c). Only a check whose quota changed runs it (52 steps).
local function mul_div_ceil(a, b, c)
  local digit = 67108864 -- 2^26
  local a_hi, a_lo = math.floor(a / digit), a % digit
  local b_hi, b_lo = math.floor(b / digit), b % digit
  local low = a_lo * b_lo
  local mid = a_hi * b_lo + a_lo * b_hi + math.floor(low / digit)
  low = low % digit
  local high = a_hi * b_hi + math.floor(mid / digit)
  mid = mid % digit
  -- a·b = high·2^52 + mid·2^26 + low, and high < c since a·b <= c·b < c·2^52.
  local remainder, quotient = high, 0
  for _, d in ipairs({mid, low}) do
    local bit = digit / 2
    while bit >= 1 do
      remainder, quotient = remainder * 2, quotient * 2
      if d >= bit then
        d = d - bit
        remainder = remainder + 1
      end
      if remainder >= c then
        remainder, quotient = remainder - c, quotient + 1
      end
      bit = bit / 2
    end
  end
  if remainder > 0 then
    quotient = quotient + 1
  end
  return quotient
end

-- A TAT written under another tolerance (the key's quota changed: an override set, replaced or
-- cleared) is converted as gcra::adopted does in process: the debt tat − now scaled by the ratio
-- of the tolerances, rounded up, so the bucket is exactly as full as it was; a key with nothing
-- owed is fresh under any quota. The conversion happens here, at the key's first check under
-- the new quota (set_quota makes no round trip), and is stored even by a peek or a denial: it is
-- a function of `now`, and the unconverted debt drains at the old rate (re-converting it later
-- would refill a tightened key at once, an upgraded one slowly). The debt is capped at a full
-- bucket of the old quota: no check stores a TAT further ahead than its tolerance, so a larger
-- debt means the server's clock stepped back, and scaling that by a tightening's ratio would lock
-- the key for the jump times the ratio (in process, the racing case caps the same way).
local converted = false
if written_under ~= tolerance and tat > now then
  tat = now + mul_div_ceil(math.min(tat - now, written_under), tolerance, written_under)
  converted = true
end

local function store(value)
  local text = string.format('%.0f.0%.0f', value, tolerance)
  redis.call('SET', KEYS[1], text, 'PX', tollgate_ttl_ms(value - now))
end

local start = math.max(tat, now)
local new_tat = start + cost * t
local ahead = new_tat - now
if ahead <= tolerance then
  if tollgate_mode == 'c' and cost > 0 then
    store(new_tat)
  elseif converted then
    store(tat)
  end
  return {1, tollgate_div(tolerance - ahead, t), ahead, 0}
end
if converted then
  store(tat)
end
local behind = start - now
return {0, tollgate_div(math.max(tolerance - behind, 0), t), behind, ahead - tolerance}
