-- Compare-and-set of one user's record; assigns the next version and publishes the change,
-- atomically.
-- KEYS[1]: the user's hash.
-- ARGV: [1] expected version, [2] body, [3] channel, [4] event prefix (origin node),
--       [5] lowest acceptable version, [6] TTL ms, [7] publish command (PUBLISH, or
--       SPUBLISH on Redis Cluster: the channel shares the key's hash tag).
-- Returns {1, new version} or {0, current version}.
-- The version comes from Redis's clock (microseconds), so versions increase across nodes.
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
local t = redis.call('TIME')
local v = math.max(cur + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(ARGV[5]))
local vs = string.format('%.0f', v)
redis.call('HSET', KEYS[1], 'v', vs, 'r', vs .. '\n' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call(ARGV[7], ARGV[3], ARGV[4] .. vs .. '\n' .. ARGV[2])
return {1, v}
