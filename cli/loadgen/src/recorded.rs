//! The chaos workload: checkouts, reads or flash purchases on an open schedule, every
//! attempt recorded as an operation of a `scalectl_chaos::History` (scheduled and
//! actual start, end, outcome), with unknown outcomes retried under the same
//! idempotency key and one checkout in ten replayed on purpose. `scalectl chaos run`
//! runs it while it injects faults; the checker judges the history against the
//! database.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scalectl_chaos::experiment::Scenario;
use scalectl_chaos::{History, Line, Op, Operation, Outcome};
use serde_json::Value;

use crate::http::{Conn, Reply, Request, Target};
use crate::shop::Setup;

/// The traffic of a run, recording every attempt in the history.
pub struct Workload<'a> {
    pub scenario: Scenario,
    pub setup: &'a Setup,
    /// The buyers' ids in the database, in `setup.buyers`'s order.
    pub user_ids: &'a [i64],
    /// Names this run's idempotency keys (`chaos-RUN-i`), by which the checker finds its orders.
    pub run_id: &'a str,
    /// The flash sale a flash-sale scenario buys from.
    pub sale: Option<i64>,
}

/// How many connections the workload keeps; each carries one operation at a time.
const CONNECTIONS: usize = 32;
/// Attempts per checkout whose outcome is unknown (same idempotency key each time).
const ATTEMPTS: u32 = 3;
/// How long one request may take before its outcome counts as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// One checkout in this many is submitted twice, cart and all, under one key.
const REPLAY_EVERY: u64 = 10;

impl Workload<'_> {
    /// Sends `rate` operations a second for `duration` from `t0`, each at its due time,
    /// until `stop`; every attempt lands in `history`.
    pub async fn run(&self, target: &Target, rate: f64, duration: Duration, t0: Instant, history: &Mutex<History>, stop: &AtomicBool) {
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let next = AtomicU64::new(0);
        let work = |client: u32| {
            let next = &next;
            async move {
                let mut conn = Conn::new(target.clone());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    for op in self.op(&mut conn, i, client, t0, due).await {
                        history.lock().unwrap().ops.push(op);
                    }
                }
            }
        };
        futures_join_all((0..CONNECTIONS as u32).map(work)).await;
    }

    /// Operation `i`: a read, or a checkout (cart add, then checkout with the run's key,
    /// retried with the same key while its outcome is unknown). Returns every attempt.
    async fn op(&self, conn: &mut Conn, i: u64, client: u32, t0: Instant, due: Instant) -> Vec<Op> {
        let b = (i as usize) % self.setup.buyers.len();
        let buyer = &self.setup.buyers[b];
        let product = self.setup.products[(i as usize / self.setup.buyers.len()) % self.setup.products.len()];
        let read = match self.scenario {
            Scenario::Browse => true,
            Scenario::Mixed => i % 10 >= 3,
            Scenario::Checkout | Scenario::FlashSale => false,
        };
        let timeout = REQUEST_TIMEOUT;
        let since = |t: Instant| t.saturating_duration_since(t0);
        if read {
            let started = Instant::now();
            let route = format!("/products/{product}");
            let reply = conn.send(&Request::get(route.clone()).client(&buyer.client), timeout).await;
            return vec![Op {
                client,
                op: Operation::Read { route },
                scheduled: since(due),
                started: since(started),
                ended: since(Instant::now()),
                outcome: read_outcome(&reply),
            }];
        }
        let key = format!("chaos-{}-{i}", self.run_id);
        if let Some(sale_id) = self.sale {
            let op = Operation::FlashPurchase { user_id: self.user_ids[b], sale_id, quantity: 1, idempotency_key: key.clone() };
            let buy = Request::post(format!("/flash-sales/{sale_id}/purchase"), "{\"quantity\":1}")
                .token(Some(&buyer.auth))
                .client(&buyer.client)
                .key(&key);
            let mut attempts = Vec::new();
            until_settled(
                conn,
                &buy,
                Instant::now(),
                |began, o| Op { client, op: op.clone(), scheduled: since(due), started: since(began), ended: since(Instant::now()), outcome: o },
                &mut attempts,
            )
            .await;
            return attempts;
        }
        let op =
            Operation::Checkout { user_id: self.user_ids[b], idempotency_key: key.clone(), cart: vec![Line { product_id: product, quantity: 1 }] };
        let mut attempts = Vec::new();
        let started = Instant::now();
        let add = Request::post("/cart/items", format!("{{\"product_id\":{product},\"quantity\":1}}")).token(Some(&buyer.auth)).client(&buyer.client);
        let added = conn.send(&add, timeout).await;
        if !matches!(added.status(), 200 | 201) {
            // Nothing was ordered: the cart never held the item.
            let o = match &added {
                Reply::Response { status, .. } => Outcome::Failed { status: *status, definitive: true },
                _ => Outcome::Failed { status: 0, definitive: true },
            };
            attempts.push(Op { client, op, scheduled: since(due), started: since(started), ended: since(Instant::now()), outcome: o });
            return attempts;
        }
        let checkout = Request::post("/checkout", "").token(Some(&buyer.auth)).client(&buyer.client).key(&key);
        let record = |began: Instant, o: Outcome| Op {
            client,
            op: op.clone(),
            scheduled: since(due),
            started: since(began),
            ended: since(Instant::now()),
            outcome: o,
        };
        let acknowledged = until_settled(conn, &checkout, started, record, &mut attempts).await;
        if acknowledged && i % REPLAY_EVERY == REPLAY_EVERY / 2 {
            // A client that lost the answer does it all again under the same key; the shop
            // must answer with the same order.
            let began = Instant::now();
            let _ = conn.send(&add, timeout).await;
            let reply = conn.send(&checkout, timeout).await;
            attempts.push(record(began, outcome(&reply)));
        }
        attempts
    }
}

/// Sends `req` until its outcome is settled (an answer, or a definitive refusal), at most
/// [`ATTEMPTS`] times under its one idempotency key, recording every attempt; the first
/// attempt's start is `first`. Returns whether the last attempt was acknowledged.
async fn until_settled(conn: &mut Conn, req: &Request, first: Instant, record: impl Fn(Instant, Outcome) -> Op, attempts: &mut Vec<Op>) -> bool {
    for attempt in 0..ATTEMPTS {
        let began = if attempt == 0 { first } else { Instant::now() };
        let o = outcome(&conn.send(req, REQUEST_TIMEOUT).await);
        let settled = !matches!(o, Outcome::Unknown { .. } | Outcome::Failed { definitive: false, .. });
        let acknowledged = matches!(o, Outcome::Ok { .. });
        attempts.push(record(began, o));
        if settled {
            return acknowledged;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// How one reply counts: 2xx ok (with the order id when there is one), 4xx a definitive
/// refusal, 5xx a failure whose effect is unknown, no reply unknown.
fn outcome(reply: &Reply) -> Outcome {
    match reply {
        Reply::Response { status, body } if (200..300).contains(status) => {
            let order_id = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["id"].as_i64());
            Outcome::Ok { order_id }
        }
        Reply::Response { status, .. } => Outcome::Failed { status: *status, definitive: *status < 500 },
        Reply::Io => Outcome::Unknown { error: "connection failed".into() },
        Reply::Timeout => Outcome::Unknown { error: "no answer in time".into() },
    }
}

/// A read's outcome: a 2xx body's `id` is a product's, not an order's, so it is not kept.
fn read_outcome(reply: &Reply) -> Outcome {
    match outcome(reply) {
        Outcome::Ok { .. } => Outcome::Ok { order_id: None },
        other => other,
    }
}

/// Runs futures concurrently on the current task and waits for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
}
