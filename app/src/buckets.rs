//! In-process token buckets, per key: what rate limiting falls back to without Redis.
//! A leaf, held by `AppState`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateSpec;

/// One bucket per key: tokens left and when they were counted.
#[derive(Default)]
pub struct LocalBuckets {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl LocalBuckets {
    /// Takes one token; `Err(seconds)` tells how long until one is available.
    pub fn take(&self, key: String, spec: RateSpec) -> Result<(), f64> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            // Full buckets carry no information; dropping them bounds memory.
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * spec.per_second < spec.burst);
        }
        let (tokens, at) = map.entry(key).or_insert((spec.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * spec.per_second).min(spec.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / spec.per_second)
        }
    }
}
