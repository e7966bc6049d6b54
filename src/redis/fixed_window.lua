-- Fixed window (DESIGN.md §4), windows aligned to the Unix epoch, in microseconds.
-- KEYS[1]: "index:count:W" of the key's current window. ARGV[4]: window W, ARGV[5]: limit.
-- A check in a later window starts from zero. A clock that went back (an earlier window index)
-- keeps using the stored window (time stands still, never admitting more); more than one window
-- back (a wall-clock step), only until the key's TTL runs out (tollgate_ttl_left_us). State
-- stored under another window length (a process with another quota under the same prefix) is
-- on another grid: the key starts afresh. ("index:count", without W, is the format of earlier
-- versions, read as this window length.)
local window = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local now = tollgate_now_us
local cost = tollgate_cost
local index = tollgate_div(now, window)
local count = 0
local cap = nil
local stored = redis.call('GET', KEYS[1])
if stored then
  local stored_index, stored_count, stored_window = string.match(stored, '^(%d+):(%d+):?(%d*)$')
  stored_index = tonumber(stored_index)
  local same_grid = stored_window == '' or tonumber(stored_window) == window
  if stored_index and same_grid and stored_index >= index then
    if stored_index > index + 1 then
      cap = tollgate_ttl_left_us(KEYS[1])
    end
    index = stored_index
    count = tonumber(stored_count)
  end
end
local ends = (index + 1) * window - now
if cap and cap < ends then
  ends = cap
end
if count + cost <= limit then
  if tollgate_mode == 'c' and cost > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f:%.0f:%.0f', index, count + cost, window), 'PX', tollgate_ttl_ms(ends))
  end
  local reset = 0
  if count + cost > 0 then
    reset = ends
  end
  return {1, limit - count - cost, reset, 0}
end
local reset = 0
if count > 0 then
  reset = ends
end
return {0, math.max(limit - count, 0), reset, ends}
