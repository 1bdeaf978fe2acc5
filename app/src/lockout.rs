//! Slowing password guessing down: `failures.rs`' policy applied to a login. Counts
//! live in Redis when it is configured, so every instance sees every failure, and in
//! this process otherwise or while Redis fails.

use std::time::Duration;

use crate::config::RateSpec;
use crate::error::AppError;
use crate::failures::{self, ACCOUNT_ALARM, Counts, WINDOW};
use crate::ratelimit;
use crate::state::AppState;

/// Reads the pair's and the account's counts, after recording a failure of each when
/// ARGV[1] is `fail`. Returns {pair failures, seconds since the pair's last failure
/// (text: Lua numbers come back as integers), account failures}.
const COUNT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] == 'fail' then
  for i = 1, 2 do
    redis.call('HINCRBY', KEYS[i], 'n', 1)
    redis.call('HSET', KEYS[i], 'last', tostring(now))
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
end
local pair = redis.call('HMGET', KEYS[1], 'n', 'last')
local account = redis.call('HGET', KEYS[2], 'n')
return {tonumber(pair[1]) or 0, tostring(now - (tonumber(pair[2]) or now)), tonumber(account) or 0}
"#;

/// Whether `client` may try a password for `email` now: a client that failed too
/// often must wait (429 with Retry-After, whatever the password), and an account
/// under attack from many clients takes one attempt a second. `Ok(true)` when the
/// client has failures that a success should clear.
pub async fn check(state: &AppState, email: &str, client: &str) -> Result<bool, AppError> {
    let c = counts(state, email, client, false).await;
    if let Some(left) = failures::wait(c.pair, c.pair_since_last) {
        return Err(AppError::RateLimited { retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64 });
    }
    if c.account >= ACCOUNT_ALARM {
        ratelimit::check(state, "login-account", email, RateSpec { per_second: 1.0, burst: 1.0 }).await?;
    }
    Ok(c.pair > 0)
}

/// Records a failed attempt of `client` for `email` (a wrong password or no such user).
pub async fn failed(state: &AppState, email: &str, client: &str) {
    let c = counts(state, email, client, true).await;
    if c.pair == failures::FREE_FAILURES || c.account == ACCOUNT_ALARM {
        tracing::warn!(email, client, pair = c.pair, account = c.account, "repeated failed logins; further attempts are slowed down");
    }
}

/// Forgets `client`'s failures for `email` after it logged in.
pub async fn succeeded(state: &AppState, email: &str, client: &str) {
    let pair = pair_key(email, client);
    if let Some(redis) = state.redis() {
        let key = redis.key(format_args!("failed-logins:{pair}"));
        let result: redis::RedisResult<()> = redis.call(|mut c| async move { redis::AsyncCommands::del(&mut c, key).await }).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "failed logins not cleared in redis");
        }
    }
    state.failures.clear(&pair);
}

/// The keys of a pair's and an account's counts; they cannot collide, whatever the
/// email holds.
fn pair_key(email: &str, client: &str) -> String {
    format!("pair:{client}:{email}")
}

fn account_key(email: &str) -> String {
    format!("account:{email}")
}

async fn counts(state: &AppState, email: &str, client: &str, fail: bool) -> Counts {
    let (pair, account) = (pair_key(email, client), account_key(email));
    if let Some(redis) = state.redis() {
        let keys = (redis.key(format_args!("failed-logins:{pair}")), redis.key(format_args!("failed-logins:{account}")));
        let mode = if fail { "fail" } else { "read" };
        let result: redis::RedisResult<(u32, String, u32)> = redis
            .call(|mut c| async move { redis::Script::new(COUNT).key(keys.0).key(keys.1).arg(mode).arg(WINDOW.as_secs()).invoke_async(&mut c).await })
            .await;
        match result {
            Ok((pair, since, account)) => {
                let since = since.parse::<f64>().unwrap_or(0.0).max(0.0);
                return Counts { pair, pair_since_last: Duration::from_secs_f64(since), account };
            }
            Err(e) => tracing::warn!(error = %e, "redis failed-login count failed; counting in this process"),
        }
    }
    state.failures.counts(&pair, &account, fail)
}
