//! A tiny bounded in-process TTL cache for product reads, holding each product's JSON
//! body. Other processes do not see our invalidations, so the TTL is kept short (about
//! a second) to bound staleness.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;

pub struct LocalCache {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<i64, (Instant, Bytes)>>,
}

impl LocalCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        LocalCache {
            ttl,
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, id: i64) -> Option<Bytes> {
        // A read lock: concurrent hits do not wait for each other.
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(&id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, p)| p.clone())
    }

    pub fn put(&self, id: i64, body: Bytes) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            // Expired entries go first; if everything is fresh, start over rather than
            // track recency: a cold second costs one read per product.
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(id, (Instant::now(), body));
    }

    pub fn remove(&self, id: i64) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
