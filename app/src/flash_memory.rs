//! What one shop process remembers about flash sales between requests: each sale's
//! immutable data, the sales PostgreSQL reported sold out and their final buyers, when a
//! gate "no" was last verified, and the ledgers this process owes a close. A leaf: it
//! knows nothing of requests or of `AppState`, which holds it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{Notify, OnceCell};

/// How often one process lets a gate-rejected buyer through to PostgreSQL, so a
/// counter that is wrong on the low side heals instead of stranding units.
pub(crate) const VERIFY_EVERY: Duration = Duration::from_secs(1);

/// How long a request that finds its sale sold out waits for this process's read of
/// the final buyers before asking PostgreSQL about its own key instead. The read is one
/// statement; without the wait, every loser in between made a read of its own, and in
/// a stampede those reads queued in front of the one that would have answered them all.
pub(crate) const SEAL_WAIT: Duration = Duration::from_secs(1);

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
    /// Sales whose final buyers are being read, and how their readers are woken.
    pub(crate) sealing: Mutex<HashMap<i64, Arc<Notify>>>,
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
        if self.sealed.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
            return false;
        }
        let mut sealing = self.sealing.lock().unwrap_or_else(|e| e.into_inner());
        if sealing.contains_key(&id) {
            return false;
        }
        sealing.insert(id, Arc::default());
        true
    }
    /// Ends a read of the final buyers (`None`: it failed, or the sale was not sold
    /// out after all) and wakes whoever waits for it.
    pub(crate) fn finish_sealing(&self, id: i64, buyers: Option<HashSet<i64>>) {
        if let Some(buyers) = buyers {
            self.sealed.write().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(buyers));
        }
        let woken = self.sealing.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Some(notify) = woken {
            notify.notify_waiters();
        }
    }
    /// The sale's final buyers: at once if read, after at most `wait` if a read is in
    /// flight, `None` if there is no read or it failed or took longer.
    pub(crate) async fn sealed_within(&self, id: i64, wait: Duration) -> Option<Arc<HashSet<i64>>> {
        if let Some(buyers) = self.sealed(id) {
            return Some(buyers);
        }
        let Some(notify) = self.sealing.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned() else {
            // No read in flight: perhaps it ended just now.
            return self.sealed(id);
        };
        let woken = notify.notified();
        tokio::pin!(woken);
        // Registered before looking again, so a read that ends in between still wakes us.
        woken.as_mut().enable();
        let in_flight = self.sealing.lock().unwrap_or_else(|e| e.into_inner()).get(&id).is_some_and(|n| Arc::ptr_eq(n, &notify));
        if in_flight {
            let _ = tokio::time::timeout(wait, woken).await;
        }
        self.sealed(id)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::FlashLocal;

    #[tokio::test]
    async fn a_loser_waits_for_the_read_in_flight_and_is_answered_by_it() {
        let flash = Arc::new(FlashLocal::default());
        assert!(flash.sealed_within(7, Duration::from_secs(5)).await.is_none(), "no read in flight: nothing to wait for");
        assert!(flash.start_sealing(7));
        assert!(!flash.start_sealing(7), "one read per sale at a time");
        let waiter = tokio::spawn({
            let flash = flash.clone();
            async move { flash.sealed_within(7, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        flash.finish_sealing(7, Some(HashSet::from([1, 2])));
        let buyers = waiter.await.unwrap().expect("the read's buyers");
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the read, not by the timeout");
        assert!(buyers.contains(&1) && !buyers.contains(&3));
        assert!(!flash.start_sealing(7), "sealed: nothing more to read");
    }

    #[tokio::test]
    async fn a_failed_read_sends_its_waiters_to_postgres_at_once() {
        let flash = Arc::new(FlashLocal::default());
        assert!(flash.start_sealing(8));
        let waiter = tokio::spawn({
            let flash = flash.clone();
            async move { flash.sealed_within(8, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        flash.finish_sealing(8, None);
        assert!(waiter.await.unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(flash.start_sealing(8), "a later caller may try the read again");
    }

    #[tokio::test]
    async fn a_read_that_takes_too_long_is_not_waited_for() {
        let flash = FlashLocal::default();
        assert!(flash.start_sealing(9));
        let started = Instant::now();
        assert!(flash.sealed_within(9, Duration::from_millis(100)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
