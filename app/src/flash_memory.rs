//! What one shop process remembers about flash sales between requests: each sale's
//! immutable data, the sales PostgreSQL reported sold out and their final buyers, when a
//! gate "no" was last verified, and the ledgers this process owes a close. A leaf: it
//! knows nothing of requests or of `AppState`, which holds it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::OnceCell;

/// How often one process lets a gate-rejected buyer through to PostgreSQL, so a
/// counter that is wrong on the low side heals instead of stranding units.
pub(crate) const VERIFY_EVERY: Duration = Duration::from_secs(1);

/// The immutable part of a sale, cached per process.
#[derive(Clone, Copy)]
pub struct SaleMeta {
    pub product_id: i64,
    pub starts_at: OffsetDateTime,
    pub per_buyer_limit: i32,
}

/// Per-process flash-sale memory: immutable sale data, sales seen sold out in
/// PostgreSQL (remaining never grows back) and, once read, their final buyers; when we
/// last verified a gate "no"; sales whose ledger this process must close.
#[derive(Default)]
pub struct FlashLocal {
    pub(crate) meta: Mutex<HashMap<i64, Arc<OnceCell<SaleMeta>>>>,
    pub(crate) sold_out: Mutex<HashSet<i64>>,
    pub(crate) sealed: RwLock<HashMap<i64, Arc<HashSet<i64>>>>,
    pub(crate) sealing: Mutex<HashSet<i64>>,
    pub(crate) verified: Mutex<HashMap<i64, Instant>>,
    pub(crate) unrecorded: Mutex<HashSet<i64>>,
}

impl FlashLocal {
    /// Where the sale's immutable data is kept once read (empty until then).
    pub(crate) fn meta_cell(&self, id: i64) -> Arc<OnceCell<SaleMeta>> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().clone()
    }
    /// Drops the sale's cell unless it holds its data (the read failed).
    pub(crate) fn forget_meta(&self, id: i64) {
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        if meta.get(&id).is_some_and(|cell| !cell.initialized()) {
            meta.remove(&id);
        }
    }
    /// Every buyer of a sold-out sale, once this process has read them.
    pub(crate) fn sealed(&self, id: i64) -> Option<Arc<HashSet<i64>>> {
        self.sealed.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }
    /// How many buyers this process knows a sold-out sale to have (`None` until it
    /// has read them).
    pub fn sealed_buyers(&self, id: i64) -> Option<usize> {
        self.sealed(id).map(|b| b.len())
    }
    /// Whether this caller should read the buyers now (one at a time per sale).
    pub(crate) fn start_sealing(&self, id: i64) -> bool {
        !self.sealed.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id) && self.sealing.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
    }
    pub(crate) fn finish_sealing(&self, id: i64, buyers: Option<HashSet<i64>>) {
        if let Some(buyers) = buyers {
            self.sealed.write().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(buyers));
        }
        self.sealing.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
    /// A buyer went to PostgreSQL without the ledger recording them.
    pub(crate) fn unrecorded(&self, id: i64) {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }
    /// Whether this process owes the sale's ledger a close; clears the debt.
    pub(crate) fn take_unrecorded(&self, id: i64) -> bool {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }

    pub(crate) fn is_sold_out(&self, id: i64) -> bool {
        self.sold_out.lock().unwrap_or_else(|e| e.into_inner()).contains(&id)
    }
    pub(crate) fn mark_sold_out(&self, id: i64) {
        self.sold_out.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }
    /// True at most once per [`VERIFY_EVERY`] per sale.
    pub(crate) fn should_verify(&self, id: i64) -> bool {
        let mut map = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get(&id) {
            Some(at) if now.duration_since(*at) < VERIFY_EVERY => false,
            _ => {
                map.insert(id, now);
                true
            }
        }
    }
}
