-- Compare-and-set of one auction's projection on its version.
-- KEYS[1] timer hash, KEYS[2] active sorted set
-- ARGV[1] version, ARGV[2] mode ("newer": only a higher version; "repair": equal too),
-- ARGV[3] live (1/0), ARGV[4] ends_at_ms, ARGV[5] auction_id, ARGV[6] TTL seconds for ended,
-- ARGV[7..] field, value pairs
-- Returns {applied (1/0), version stored before}
local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version = tonumber(ARGV[1])
if stored > version or (stored == version and ARGV[2] ~= 'repair') then
  return {0, stored}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
  redis.call('PERSIST', KEYS[1])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
return {1, stored}
