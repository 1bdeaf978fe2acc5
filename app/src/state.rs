//! `AppState`: the pools, the optional Redis connection and the in-process structures
//! (caches, rate buckets, read-your-writes tracker, metrics) shared by all handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Semaphore;

use crate::cache::LocalCache;
use crate::config::Settings;
use crate::db::Db;
use crate::flash::FlashLocal;
use crate::metrics::Metrics;
use crate::ratelimit::LocalBuckets;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid database url")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("invalid redis url")]
    RedisUrl(#[source] redis::RedisError),
}

/// Redis with the key prefix of this deployment. Every call has a short response
/// timeout: a slow Redis must degrade to the PostgreSQL path, never stall requests.
#[derive(Clone)]
pub struct Redis {
    pub conn: ConnectionManager,
    prefix: Arc<str>,
}

impl Redis {
    pub fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.prefix, parts)
    }
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub primary: Db,
    pub replica: Option<Db>,
    /// Set once Redis is reachable; until then (or forever, without a Redis URL)
    /// every Redis use falls back to its PostgreSQL or in-process path.
    redis: OnceLock<Redis>,
    pub metrics: Metrics,
    /// Bounds concurrent argon2 work to the number of cores, so a login storm queues
    /// here instead of starving the async runtime's blocking pool and other routes.
    pub hasher: Semaphore,
    pub recent_writers: Mutex<HashMap<i64, Instant>>,
    pub product_cache: LocalCache,
    pub buckets: LocalBuckets,
    pub flash: FlashLocal,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state. Pools connect lazily so the process starts (and reports
    /// not-ready) while the database is down; Redis is joined when it is reachable.
    pub async fn connect(settings: Settings) -> Result<AppState, StateError> {
        let pool = |url: &str| {
            Db::connect_lazy(url, settings.db_pool_size, settings.db_pooler)
                .map_err(StateError::DatabaseUrl)
        };
        let primary = pool(&settings.database_url)?;
        let replica = settings
            .read_database_url
            .as_deref()
            .map(pool)
            .transpose()?;
        let redis_client = match &settings.redis_url {
            Some(url) => Some(redis::Client::open(url.as_str()).map_err(StateError::RedisUrl)?),
            None => None,
        };
        if settings.unsafe_non_idempotent_checkout {
            tracing::warn!(
                "!!! SHOP_UNSAFE_NON_IDEMPOTENT_CHECKOUT is set: checkout IGNORES Idempotency-Key and \
                 retries create duplicate orders. TEST ONLY - never in production !!!"
            );
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let state = AppState(Arc::new(Inner {
            settings,
            primary,
            replica,
            redis: OnceLock::new(),
            metrics: Metrics::default(),
            hasher: Semaphore::new(cores),
            recent_writers: Mutex::new(HashMap::new()),
            product_cache: LocalCache::new(Duration::from_millis(1500), 10_000),
            buckets: LocalBuckets::default(),
            flash: FlashLocal::default(),
        }));
        if let Some(client) = redis_client {
            // One quick attempt now, so a healthy Redis is used from the first request;
            // if it is down, keep trying in the background instead of delaying start.
            if !state.try_connect_redis(&client).await {
                let state = state.clone();
                tokio::spawn(async move {
                    while !state.try_connect_redis(&client).await {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                });
            }
        }
        Ok(state)
    }

    async fn try_connect_redis(&self, client: &redis::Client) -> bool {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(1)
            .set_max_delay(500);
        match ConnectionManager::new_with_config(client.clone(), config).await {
            Ok(conn) => {
                let prefix = self.settings.redis_prefix.as_str().into();
                let _ = self.redis.set(Redis { conn, prefix });
                tracing::info!("redis connected");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis unreachable; running without it for now");
                false
            }
        }
    }

    /// Redis, when configured and reachable.
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.get()
    }

    /// Records that `user_id` wrote, so their reads stay on the primary for a while.
    pub fn mark_write(&self, user_id: i64) {
        if self.replica.is_none() {
            return;
        }
        let now = Instant::now();
        let window = self.settings.read_your_writes_window;
        let mut map = self
            .recent_writers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, at| now.duration_since(*at) < window);
        }
        map.insert(user_id, now);
    }

    /// The pool for a read: the replica, unless this user wrote within the window
    /// (they must see their own writes) or there is no replica.
    pub fn read_pool(&self, user_id: Option<i64>) -> &Db {
        let Some(replica) = &self.replica else {
            return &self.primary;
        };
        if let Some(uid) = user_id {
            let map = self
                .recent_writers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if map
                .get(&uid)
                .is_some_and(|at| at.elapsed() < self.settings.read_your_writes_window)
            {
                return &self.primary;
            }
        }
        replica
    }
}
