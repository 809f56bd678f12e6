-- Finds nodes whose lease expired and claims each for this node (one sweeper per dead node).
-- KEYS[1]: the lease zset.
-- ARGV: [1] this node, [2] claim key prefix, [3] claim TTL ms.
-- Returns the claimed nodes (at most 16 per call).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
local claimed = {}
for _, node in ipairs(dead) do
  if node ~= ARGV[1] and redis.call('SET', ARGV[2] .. node, ARGV[1], 'NX', 'PX', ARGV[3]) then
    table.insert(claimed, node)
  end
end
return claimed
