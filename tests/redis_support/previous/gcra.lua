-- GCRA (DESIGN.md §3; the same integer math as src/gcra.rs, in microseconds).
-- KEYS[1]: the key's TAT (decimal µs). ARGV[4]: emission interval T, ARGV[5]: tolerance burst·T.
-- The key expires when its TAT passes: a fresh key and an expired key are indistinguishable.
local t = tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local start = math.max(tat, now)
local new_tat = start + cost * t
local ahead = new_tat - now
if ahead <= tolerance then
  if tollgate_mode == 'c' and cost > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', tollgate_ttl_ms(ahead))
  end
  return {1, tollgate_div(tolerance - ahead, t), ahead, 0}
end
local behind = start - now
return {0, tollgate_div(math.max(tolerance - behind, 0), t), behind, ahead - tolerance}
