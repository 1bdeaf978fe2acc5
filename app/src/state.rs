//! `AppState`: the pools, the optional Redis connection and the in-process structures
//! (caches, rate buckets, read-your-writes tracker, metrics) shared by all handlers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::Semaphore;

use axum::body::Bytes;

use crate::buckets::LocalBuckets;
use crate::cache::LocalCache;
use crate::config::Settings;
use crate::db::Db;
use crate::failures::LocalFailures;
use crate::flash_memory::FlashLocal;
use crate::identity::CachedSession;
use crate::metrics::Metrics;
use crate::redis_link::{Follow, RedisLink, manager_config};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid database url")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("invalid redis url")]
    RedisUrl(#[source] redis::RedisError),
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub primary: Db,
    pub replica: Option<Db>,
    /// Set once Redis is reachable; until then (or forever, without a Redis URL)
    /// every Redis use falls back to its PostgreSQL or in-process path.
    redis: OnceLock<RedisLink>,
    pub metrics: Metrics,
    /// Bounds concurrent argon2 work to the number of cores, so a login storm queues
    /// here instead of starving the async runtime's blocking pool and other routes.
    pub hasher: Semaphore,
    /// Users who wrote through this process, and when (read-your-writes, local half).
    pub recent_writers: Mutex<HashMap<i64, Instant>>,
    /// When read-your-writes last failed to reach Redis here. For one window after it,
    /// users' reads go to the primary without asking Redis: a mark made meanwhile may
    /// be missing there, and a Redis that is down is not asked on every read.
    ryw_redis_failed_at: Mutex<Option<Instant>>,
    pub product_cache: LocalCache<i64, Bytes>,
    /// Sessions by token hash, for `Settings::session_cache` (see `extract::lookup`).
    pub session_cache: LocalCache<[u8; 32], CachedSession>,
    pub buckets: LocalBuckets,
    /// Failed logins, when Redis does not count them (see `lockout.rs`).
    pub failures: LocalFailures,
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
        let pool = |url: &str| Db::connect_lazy(url, settings.db_pool_size, settings.db_pooler).map_err(StateError::DatabaseUrl);
        let primary = pool(&settings.database_url)?;
        let replica = settings.read_database_url.as_deref().map(pool).transpose()?;
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
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let settings_session_cache = settings.session_cache;
        let state = AppState(Arc::new(Inner {
            settings,
            primary,
            replica,
            redis: OnceLock::new(),
            metrics: Metrics::default(),
            hasher: Semaphore::new(cores),
            recent_writers: Mutex::new(HashMap::new()),
            ryw_redis_failed_at: Mutex::new(None),
            product_cache: LocalCache::new(Duration::from_millis(1500), 10_000),
            session_cache: LocalCache::new(settings_session_cache, 100_000),
            buckets: LocalBuckets::default(),
            failures: LocalFailures::default(),
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

    /// Connects to Redis: where the Sentinels say the primary is, when they watch it,
    /// else (or when none answers) the URL's address.
    async fn try_connect_redis(&self, client: &redis::Client) -> bool {
        let settings = &self.settings;
        let follow = (!settings.redis_sentinels.is_empty())
            .then(|| Follow::new(settings.redis_sentinels.clone(), settings.redis_sentinel_master.clone(), client.get_connection_info().clone()));
        let primary = match &follow {
            Some(follow) => follow.primary().await,
            None => None,
        };
        let connected = match (&follow, primary) {
            (Some(follow), Some(primary)) => follow.connect(&primary).await,
            _ => ConnectionManager::new_with_config(client.clone(), manager_config()).await,
        };
        match connected {
            Ok(conn) => {
                let _ = self.redis.set(RedisLink::new(conn, &settings.redis_prefix, follow));
                tracing::info!("redis connected");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis unreachable; running without it for now");
                false
            }
        }
    }

    /// Redis, when configured, connected, and its breaker closed (see
    /// [`crate::redis_link`]): `None` means take the fallback without asking Redis.
    pub fn redis(&self) -> Option<&RedisLink> {
        self.redis.get().filter(|r| r.available())
    }

    /// For `/metrics`: `None` without a Redis URL, else whether Redis is in use now.
    pub fn redis_status(&self) -> Option<bool> {
        self.settings.redis_url.as_ref().map(|_| self.redis.get().is_some_and(|r| !r.is_open()))
    }

    /// Records that `user_id` wrote, so their reads stay on the primary for the
    /// read-your-writes window: in this process, and with Redis configured also as
    /// `{prefix}ryw:{user}` (expiring with the window) so that every instance behind the
    /// load balancer sees it. A mark that cannot reach Redis is counted and logged;
    /// this process then keeps every user's reads on the primary for a window.
    pub async fn mark_write(&self, user_id: i64) {
        if self.replica.is_none() {
            return;
        }
        let now = Instant::now();
        let window = self.settings.read_your_writes_window;
        {
            let mut map = self.recent_writers.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() > 100_000 {
                map.retain(|_, at| now.duration_since(*at) < window);
            }
            map.insert(user_id, now);
        }
        if !self.shares_read_your_writes() {
            return;
        }
        let result = match self.redis() {
            Some(redis) => {
                let key = redis.key(format_args!("ryw:{user_id}"));
                let px = window.as_millis().max(1) as u64;
                redis
                    .call(|mut c| async move { redis::cmd("SET").arg(key).arg(1).arg("PX").arg(px).query_async::<()>(&mut c).await })
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Err("redis not connected".to_owned()),
        };
        if let Err(error) = result {
            tracing::warn!(%error, user_id, "read-your-writes mark not recorded in redis");
            self.metrics.ryw_mark_failures.fetch_add(1, Ordering::Relaxed);
            self.ryw_redis_failed();
        }
    }

    /// The pool for a read: the replica, unless this user wrote within the window
    /// through any instance (they must see their own writes) or there is no replica.
    /// Anonymous reads never ask Redis. When Redis is configured but cannot answer,
    /// the read goes to the primary (never a possibly stale replica) and is counted.
    pub async fn read_pool(&self, user_id: Option<i64>) -> &Db {
        let Some(replica) = &self.replica else {
            return &self.primary;
        };
        let Some(uid) = user_id else {
            return replica;
        };
        if self.wrote_here_recently(uid) {
            return &self.primary;
        }
        if !self.shares_read_your_writes() {
            return replica;
        }
        match self.wrote_anywhere_recently(uid).await {
            Some(true) => &self.primary,
            Some(false) => replica,
            None => {
                self.metrics.ryw_fallbacks.fetch_add(1, Ordering::Relaxed);
                &self.primary
            }
        }
    }

    /// Whether writes are tracked in Redis too (without it: this process only).
    fn shares_read_your_writes(&self) -> bool {
        self.settings.redis_url.is_some() && !self.settings.read_your_writes_window.is_zero()
    }

    fn wrote_here_recently(&self, user_id: i64) -> bool {
        let map = self.recent_writers.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&user_id).is_some_and(|at| at.elapsed() < self.settings.read_your_writes_window)
    }

    /// Redis's answer to "did this user write within the window, through any
    /// instance?"; `None` when Redis cannot tell (not connected, failing, or failed
    /// here within the last window).
    async fn wrote_anywhere_recently(&self, user_id: i64) -> Option<bool> {
        let failed_at = *self.ryw_redis_failed_at.lock().unwrap_or_else(|e| e.into_inner());
        if failed_at.is_some_and(|at| at.elapsed() < self.settings.read_your_writes_window) {
            return None;
        }
        let redis = self.redis()?;
        let key = redis.key(format_args!("ryw:{user_id}"));
        match redis.call(|mut c| async move { redis::AsyncCommands::exists::<_, bool>(&mut c, key).await }).await {
            Ok(wrote) => Some(wrote),
            Err(e) => {
                tracing::warn!(error = %e, user_id, "read-your-writes check failed; reading from the primary");
                self.ryw_redis_failed();
                None
            }
        }
    }

    fn ryw_redis_failed(&self) {
        *self.ryw_redis_failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}
