//! A tiny bounded in-process TTL cache. The shop keeps two: product bodies (about a
//! second: other processes do not see our invalidations, so staleness must stay short)
//! and sessions (see `extract::lookup`: a bearer token is otherwise one database round
//! trip on every authenticated request).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub struct LocalCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> LocalCache<K, V> {
    /// A cache whose entries live `ttl`; a zero `ttl` keeps nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        LocalCache { ttl, capacity, entries: RwLock::new(HashMap::new()) }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        // A read lock: concurrent hits do not wait for each other.
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            // Expired entries go first; if everything is fresh, start over rather than
            // track recency: a cold second costs one read per key.
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    pub fn remove(&self, key: &K) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_a_full_cache_starts_over() {
        let c = LocalCache::new(Duration::from_millis(50), 2);
        c.put(1, "a");
        c.put(2, "b");
        assert_eq!(c.get(&1), Some("a"));
        c.put(3, "c"); // full and all fresh: cleared, then 3 kept
        assert_eq!((c.get(&1), c.get(&3)), (None, Some("c")));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&3), None);
        c.remove(&3);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let c = LocalCache::new(Duration::ZERO, 10);
        c.put(1, 1);
        assert_eq!(c.get(&1), None);
    }
}
