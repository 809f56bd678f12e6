-- Renews this node's lease and records its stats.
-- KEYS[1]: the lease zset, KEYS[2]: the stats hash.
-- ARGV: [1] node id, [2] lease TTL ms, [3] stats ("<sessions> <users>").
-- Returns 1 when the node was not registered (first start, swept as dead, or Redis lost its
-- data): the caller must re-assert what it holds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
