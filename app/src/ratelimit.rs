//! Token-bucket rate limiting per client and route group: in Redis (one Lua script, so
//! every process shares the bucket) when configured, in-process otherwise or when
//! Redis fails.

use crate::config::RateSpec;
use crate::error::AppError;
use crate::state::AppState;

const TOKEN_BUCKET: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(retry)}
"#;

/// Charges one request of `client` against the `group` bucket.
pub async fn check(state: &AppState, group: &str, client: &str, spec: RateSpec) -> Result<(), AppError> {
    if !spec.is_enabled() {
        return Ok(());
    }
    let verdict = match state.redis() {
        Some(redis) => {
            let key = redis.key(format_args!("rl:{group}:{client}"));
            let result: redis::RedisResult<(i64, String)> = redis
                .call(
                    |mut c| async move { redis::Script::new(TOKEN_BUCKET).key(key).arg(spec.per_second).arg(spec.burst).invoke_async(&mut c).await },
                )
                .await;
            match result {
                Ok((1, _)) => Ok(()),
                Ok((_, retry)) => Err(retry.parse::<f64>().unwrap_or(1.0)),
                Err(e) => {
                    tracing::warn!(error = %e, "redis rate limit failed; using the local bucket");
                    state.buckets.take(format!("{group}:{client}"), spec)
                }
            }
        }
        None => state.buckets.take(format!("{group}:{client}"), spec),
    };
    verdict.map_err(|secs| AppError::RateLimited { retry_after_secs: secs.ceil().max(1.0) as u64 })
}
