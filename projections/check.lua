-- Which of n expected timers does Redis hold wrongly? Runs the comparison next to the data,
-- so a reconciliation pass over 10,000 auctions costs the client a few small replies.
-- KEYS[1..n] timer hashes, KEYS[n+1] active sorted set
-- ARGV[1] tolerance (ms); then n groups of: auction_id, version, ends_at_ms, status, live (1/0)
-- Returns {index, reason, stored version, stored ends_at_ms, stored status} per wrong entry
-- ("" where nothing is stored). A newer stored version is never wrong: the live projection
-- got there first.
local n = #KEYS - 1
local tolerance = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local at = 1 + (i - 1) * 5
  local id, version, ends_at = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local status, live = ARGV[at + 4], ARGV[at + 5] == '1'
  local stored = redis.call('HMGET', KEYS[i], 'version', 'ends_at_ms', 'status')
  local reason = nil
  if not stored[1] then
    reason = 'missing'
  else
    local stored_version = tonumber(stored[1])
    if stored_version < version then
      reason = 'stale_version'
    elseif stored_version == version then
      local score = redis.call('ZSCORE', KEYS[n + 1], id)
      local in_set = score ~= false and math.abs(tonumber(score) - ends_at) <= tolerance
      if math.abs(tonumber(stored[2]) - ends_at) > tolerance then
        reason = 'ends_at_drift'
      elseif stored[3] ~= status then
        reason = 'status_differs'
      elseif live ~= in_set then
        reason = 'active_set'
      end
    end
  end
  if reason then
    table.insert(out, {i, reason, stored[1] or '', stored[2] or '', stored[3] or ''})
  end
end
return out
