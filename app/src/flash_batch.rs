//! Flash purchases in batches: the buyers of one sale that reach PostgreSQL at the same
//! moment in one process buy in one transaction.
//!
//! Why: a sale is one row (`flash_sales.remaining`), and PostgreSQL holds that row's
//! lock until the commit is flushed and, at level 3 and up, acknowledged by the
//! synchronous standbys. One purchase per transaction therefore sells one unit per
//! commit round, and in a stampede every winner waits for all the winners before them
//! (1,000 units took about 3 s at level 3, while the losers behind them on the same
//! connections waited too). A batch takes the row once for all of its buyers.
//!
//! One batch per sale per process is in flight at a time: buyers arriving meanwhile wait
//! for the next one, so a lone buyer waits for nobody and a stampede is served in
//! batches of up to [`MAX_BATCH`], each buyer at most once per batch.
//!
//! When fewer units are left than a batch asks for, it is cut to what is left and tried
//! again. Otherwise a batch is only a shortcut: if it fails (a lost connection, a
//! deadlock, no answer in time) or the sale is sold out, every buyer not yet answered is answered
//! [`Batched::Alone`] and takes the one-purchase path, whose key claim finds what, if
//! anything, the batch committed. A buyer whose key is already claimed (a retry) is sent
//! there too: that path answers replays and reused keys.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::{AppError, AppResult};
use crate::flash_memory::SaleMeta;
use crate::flash_units::{pg_remaining, seen_sold_out, take_units};
use crate::orders::{Line, NewOrder, Order, place_orders};
use crate::state::AppState;

/// The most buyers in one transaction: a batch of 128 is still one small statement per
/// step, and 1,000 units sell in about eight of them.
pub const MAX_BATCH: usize = 128;

/// How long a batch may take before its buyers go down the one-purchase path (whose key
/// claims wait for whatever the abandoned batch does): one stuck connection must not
/// hold every buyer of the sale in this process. A batch takes milliseconds.
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A purchase that went through: its order, new or replayed.
pub(crate) enum Outcome {
    Created(Order),
    Replayed(Order),
}

/// The ways a purchase is refused, before they become HTTP errors.
pub(crate) enum Refusal {
    /// This process already knows the sale is sold out; nothing to correct.
    KnownSoldOut,
    /// PostgreSQL's conditional update refused; `left` units remain there.
    Refused { left: i32 },
}

/// What a purchase came to (with the units left after it, once known), or why it was
/// refused; errors aside.
pub(crate) type Attempt = Result<(Outcome, i32), Refusal>;

/// One buyer's purchase, as the request asked for it.
pub(crate) struct Purchase {
    pub user_id: i64,
    pub email: String,
    pub key: String,
    pub hash: String,
    pub quantity: i32,
}

/// How the batch answered a buyer.
pub(crate) enum Batched {
    /// The buyer's answer, as the one-purchase path would have given it.
    Done(AppResult<Attempt>),
    /// Not decided here: take the one-purchase path.
    Alone,
}

struct Waiting {
    purchase: Purchase,
    reply: oneshot::Sender<Batched>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Waiting>,
    /// A task is draining this sale's queue.
    draining: bool,
}

/// Every sale's waiting buyers in this process. The purchase route owns one (an axum
/// extension, not a field of `AppState`, which holds only leaves).
#[derive(Default)]
pub struct Batches {
    queues: Mutex<HashMap<i64, Queue>>,
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next batch of sale `id`: the oldest waiting buyers, each buyer once. Empty
    /// (and the queue marked idle) when nobody waits.
    fn next(&self, id: i64) -> Vec<Waiting> {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(&id) else { return Vec::new() };
        let mut seen = HashSet::new();
        let (batch, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut queue.pending).into_iter().partition(|w| seen.len() < MAX_BATCH && seen.insert(w.purchase.user_id));
        queue.pending = rest;
        if batch.is_empty() {
            queues.remove(&id);
        }
        batch
    }

    /// Forgets sale `id`'s queue, answering whoever still waits [`Batched::Alone`] (by
    /// dropping their reply).
    fn forget(&self, id: i64) {
        self.lock().remove(&id);
    }
}

/// Buys `purchase` in the next batch of sale `id` in this process.
pub(crate) async fn submit(state: &AppState, batches: &Arc<Batches>, id: i64, meta: SaleMeta, purchase: Purchase) -> Batched {
    let (reply, answer) = oneshot::channel();
    let lead = {
        let mut queues = batches.lock();
        let queue = queues.entry(id).or_default();
        queue.pending.push(Waiting { purchase, reply });
        !std::mem::replace(&mut queue.draining, true)
    };
    if lead {
        // A task of its own, so a buyer who hangs up does not stop the others' batch.
        tokio::spawn(drain(state.clone(), batches.clone(), id, meta));
    }
    answer.await.unwrap_or(Batched::Alone)
}

/// Forgets the sale's queue if its drain task ends other than by finding it empty (a
/// panic), so that no buyer waits on a queue that nobody drains.
struct ForgetOnPanic(Arc<Batches>, i64);

impl Drop for ForgetOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.forget(self.1);
        }
    }
}

async fn drain(state: AppState, batches: Arc<Batches>, id: i64, meta: SaleMeta) {
    let guard = ForgetOnPanic(batches, id);
    loop {
        let mut batch = guard.0.next(id);
        if batch.is_empty() {
            return;
        }
        // Rows are inserted in this order: the same order in every batch makes two
        // processes' batches that share a buyer wait for each other, not deadlock.
        batch.sort_by_key(|w| w.purchase.user_id);
        let purchases: Vec<&Purchase> = batch.iter().map(|w| &w.purchase).collect();
        let answers = settle(&state, id, meta, &purchases).await;
        for (waiting, answer) in batch.into_iter().zip(answers) {
            let _ = waiting.reply.send(answer);
        }
    }
}

/// Answers every buyer of a batch, in its order, buying for as many as units remain.
/// When PostgreSQL has fewer units than the batch asks for, the batch is cut to what is
/// left and tried again (remaining never grows, so this ends). Everyone not answered
/// (the sale sold out, the batch failed or took longer than [`BATCH_TIMEOUT`]) takes the
/// one-purchase path.
async fn settle(state: &AppState, id: i64, meta: SaleMeta, batch: &[&Purchase]) -> Vec<Batched> {
    let mut answers: Vec<Option<Batched>> = batch.iter().map(|_| None).collect();
    // The buyers not answered yet (indices into `batch`), and the units PostgreSQL had
    // left when last asked.
    let mut todo: Vec<usize> = (0..batch.len()).collect();
    let mut left: Option<i32> = None;
    while !todo.is_empty() && !state.flash.is_sold_out(id) {
        let cut = match left {
            None => todo.len(),
            Some(left) => fitting(batch, &todo, left),
        };
        if cut == 0 {
            // The next buyer asks for more than is left: theirs is a one-purchase answer.
            break;
        }
        let now: Vec<&Purchase> = todo[..cut].iter().map(|&i| batch[i]).collect();
        let Ok(tried) = tokio::time::timeout(BATCH_TIMEOUT, buy(state, id, meta, &now)).await else {
            tracing::info!(sale_id = id, buyers = todo.len(), "flash batch got no answer in {BATCH_TIMEOUT:?}; its buyers buy alone");
            break;
        };
        match tried {
            Ok(Tried::Bought { answers: bought, remaining }) => {
                for (&i, answer) in todo[..cut].iter().zip(bought) {
                    answers[i] = Some(answer);
                }
                todo.drain(..cut);
                left = remaining.or(left);
                if remaining == Some(0) {
                    seen_sold_out(state, id);
                }
            }
            Ok(Tried::FewerUnits) => match pg_remaining(state, id).await {
                // Sold out (and now known so): the one-purchase path reads each buyer's
                // earlier order, if any, as it answers "sold out". Not answered here: the
                // batch's key claims are undone, and the same key's request elsewhere may
                // have bought one of the last units meanwhile.
                Ok(0) => break,
                Ok(remaining) => left = Some(remaining),
                Err(e) => {
                    tracing::info!(error = %e, sale_id = id, buyers = todo.len(), "flash batch could not read what is left; its buyers buy alone");
                    break;
                }
            },
            Err(e) => {
                tracing::info!(error = %e, sale_id = id, buyers = todo.len(), "flash batch failed; its buyers buy alone");
                break;
            }
        }
    }
    answers.into_iter().map(|a| a.unwrap_or(Batched::Alone)).collect()
}

/// How many of `todo`, from the first, `left` units cover.
fn fitting(batch: &[&Purchase], todo: &[usize], left: i32) -> usize {
    let mut asked = 0;
    todo.iter()
        .take_while(|&&i| {
            asked += batch[i].quantity;
            asked <= left
        })
        .count()
}

/// What one batch transaction did.
enum Tried {
    /// Done: each buyer's answer in batch order, and the units left after it (`None`
    /// when nobody bought, and nothing was committed).
    Bought { answers: Vec<Batched>, remaining: Option<i32> },
    /// Nothing committed: fewer units were left than the batch asked for.
    FewerUnits,
}

/// One transaction for the whole batch: claim every key, count every buyer against the
/// per-buyer limit, price once, write every order in one statement, then take all the
/// units in the decisive update that travels with the COMMIT (see `flash::take_units`).
async fn buy(state: &AppState, id: i64, meta: SaleMeta, batch: &[&Purchase]) -> Result<Tried, sqlx::Error> {
    let mut tx = state.primary.begin().await?;
    let claimed: HashSet<i64> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (user_id, key, request_hash)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
         ON CONFLICT (user_id, key) DO NOTHING
         RETURNING user_id",
    )
    .bind(batch.iter().map(|p| p.user_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.key.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.hash.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut tx)
    .await?
    .into_iter()
    .collect();
    let claimants: Vec<&Purchase> = batch.iter().copied().filter(|p| claimed.contains(&p.user_id)).collect();
    let within: HashSet<i64> = if claimants.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(
            "INSERT INTO flash_purchases (sale_id, buyer_id, quantity)
             SELECT $1, * FROM unnest($2::bigint[], $3::int[])
             ON CONFLICT (sale_id, buyer_id) DO UPDATE SET quantity = flash_purchases.quantity + EXCLUDED.quantity
             WHERE flash_purchases.quantity + EXCLUDED.quantity <= $4
             RETURNING buyer_id",
        )
        .bind(id)
        .bind(claimants.iter().map(|p| p.user_id).collect::<Vec<_>>())
        .bind(claimants.iter().map(|p| p.quantity).collect::<Vec<_>>())
        .bind(meta.per_buyer_limit)
        .fetch_all(&mut tx)
        .await?
        .into_iter()
        .collect()
    };
    let buyers: Vec<&Purchase> = claimants.iter().copied().filter(|p| within.contains(&p.user_id)).collect();
    if buyers.is_empty() {
        // Nothing to buy: roll back the claims, so the keys of buyers over their limit
        // stay unused (as the one-purchase path's rollback leaves them).
        return Ok(Tried::Bought { answers: answers(batch, &claimed, &within, Vec::new(), 0), remaining: None });
    }
    let over: Vec<&Purchase> = claimants.iter().copied().filter(|p| !within.contains(&p.user_id)).collect();
    if !over.is_empty() {
        sqlx::query("DELETE FROM idempotency_keys WHERE (user_id, key) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))")
            .bind(over.iter().map(|p| p.user_id).collect::<Vec<_>>())
            .bind(over.iter().map(|p| p.key.as_str()).collect::<Vec<_>>())
            .execute(&mut tx)
            .await?;
    }
    let price: i64 = sqlx::query_scalar("SELECT price_cents FROM products WHERE id = $1").bind(meta.product_id).fetch_one(&mut tx).await?;
    let lines: Vec<[Line; 1]> =
        buyers.iter().map(|p| [Line { product_id: meta.product_id, quantity: p.quantity, unit_price_cents: price }]).collect();
    let orders: Vec<NewOrder> =
        buyers.iter().zip(&lines).map(|(p, lines)| NewOrder { user_id: p.user_id, email: &p.email, key: &p.key, lines }).collect();
    let placed = place_orders(&mut tx, "flash", &orders, &[]).await?;
    let units: i32 = buyers.iter().map(|p| p.quantity).sum();
    let Some(remaining) = take_units(&mut tx, id, units).await? else {
        tx.rollback().await?;
        return Ok(Tried::FewerUnits);
    };
    // The batch is committed; this only ends the empty transaction `take_units` left.
    // Its failure (a dropped connection) changes nothing the buyers are told.
    if let Err(e) = tx.commit().await {
        tracing::info!(error = %e, sale_id = id, "could not end a committed flash batch's empty transaction");
    }
    state.metrics.flash_batches.fetch_add(1, Ordering::Relaxed);
    state.metrics.flash_batched_purchases.fetch_add(buyers.len() as u64, Ordering::Relaxed);
    tracing::info!(sale_id = id, buyers = buyers.len(), remaining, "flash batch");
    Ok(Tried::Bought { answers: answers(batch, &claimed, &within, placed, remaining), remaining: Some(remaining) })
}

/// Each buyer's answer: an order for those who bought (`placed` holds their orders in
/// batch order), the per-buyer limit for claimants over it, and the one-purchase path
/// for keys claimed before (replays and reused keys).
fn answers(batch: &[&Purchase], claimed: &HashSet<i64>, within: &HashSet<i64>, placed: Vec<Order>, remaining: i32) -> Vec<Batched> {
    let mut placed = placed.into_iter();
    batch
        .iter()
        .map(|p| {
            if !claimed.contains(&p.user_id) {
                Batched::Alone
            } else if !within.contains(&p.user_id) {
                Batched::Done(Err(AppError::conflict("per-buyer limit exceeded", Some("quantity"))))
            } else {
                match placed.next() {
                    Some(order) if order.user_id == p.user_id => Batched::Done(Ok(Ok((Outcome::Created(order), remaining)))),
                    // Cannot happen (one order per buyer, in batch order); never guess.
                    _ => Batched::Alone,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(user_id: i64) -> Waiting {
        let purchase = Purchase { user_id, email: String::new(), key: String::new(), hash: String::new(), quantity: 1 };
        Waiting { purchase, reply: oneshot::channel().0 }
    }

    fn queued(batches: &Batches, users: impl IntoIterator<Item = i64>) {
        batches.lock().entry(7).or_default().pending.extend(users.into_iter().map(waiting));
    }

    fn users(batch: &[Waiting]) -> Vec<i64> {
        batch.iter().map(|w| w.purchase.user_id).collect()
    }

    #[test]
    fn a_batch_holds_each_buyer_once_oldest_first() {
        let batches = Batches::default();
        queued(&batches, [3, 1, 3, 2, 1, 3]);
        assert_eq!(users(&batches.next(7)), [3, 1, 2]);
        assert_eq!(users(&batches.next(7)), [3, 1]);
        assert_eq!(users(&batches.next(7)), [3]);
        assert!(batches.next(7).is_empty());
        assert!(batches.lock().is_empty(), "an empty queue is forgotten");
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_buyers() {
        let batches = Batches::default();
        queued(&batches, 0..(MAX_BATCH as i64 + 5));
        assert_eq!(batches.next(7).len(), MAX_BATCH);
        assert_eq!(users(&batches.next(7)), (MAX_BATCH as i64..MAX_BATCH as i64 + 5).collect::<Vec<_>>());
    }
}
