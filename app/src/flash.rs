//! Flash sales: units reserved out of a product's stock, sold under a per-buyer limit.
//! Redis (when configured) gates the stampede with an atomic counter so most losers
//! never reach the hot row; PostgreSQL's conditional update decides every sale.
//!
//! Losers must fail fast, so a "sold out" answer asks no database once either
//! - this process has seen PostgreSQL sold out and read, in the same snapshot, every
//!   buyer of the sale (the sale is *sealed*: remaining never grows back, so that list
//!   is final; anyone not on it cannot hold an order to replay), or
//! - the gate refuses a buyer that its ledger has never let through: a Redis set of
//!   every buyer the gate sent to PostgreSQL, opened when the sale is created. The
//!   ledger is trusted only while it is known complete: it is open only if
//!   `create_sale` made it before any gate call, a process that sends a buyer past the
//!   gate unrecorded closes it, and a lost or evicted set loses its `open` mark.
//!
//! Everyone else (a buyer the ledger knows, or any buyer without a trusted ledger) is
//! checked against PostgreSQL for an earlier order under the same key, as before.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::catalog::invalidate_product;
use crate::domain::{Quantity, Units};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{AuthUser, IDEMPOTENCY_HEADER, IdempotencyKey, Json, Path, UnmarkedUser};
use crate::flash_batch::{self, Attempt, Batched, Batches, Outcome, Purchase, Refusal};
use crate::flash_memory::{SEAL_WAIT, SaleMeta};
use crate::flash_units::{pg_remaining, seen_sold_out, take_units};
use crate::orders::{Claim, Line, Order, claim_key, place_order, request_hash, stored_order, with_retries};
use crate::redis_link::RedisLink;
use crate::state::AppState;

/// Admits a buyer while the counter (KEYS[1]) is positive: takes their units, records
/// them in the ledger (KEYS[2]) and the time of this admission (KEYS[3], milliseconds),
/// returning 1. A refusal is 0 when the ledger is open and has never let this buyer
/// through (they cannot hold an order), else 2. `-1` says the counter is missing and
/// must be rebuilt from PostgreSQL. ARGV: units, buyer.
const GATE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
if tonumber(v) <= 0 then
  if redis.call('SISMEMBER', KEYS[2], 'open') == 1
     and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then
    return 0
  end
  return 2
end
redis.call('DECRBY', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], 86400)
local t = redis.call('TIME')
redis.call('SET', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), 'EX', 86400)
return 1
"#;

/// Raises the counter (KEYS[1]) to PostgreSQL's remaining (ARGV[1]) unless the gate
/// admitted anyone (time in KEYS[2], see [`GATE`]) in the last ARGV[2] milliseconds: units that
/// admitted buyers hold are not yet sold in PostgreSQL, so its remaining counts them
/// again, and copying it then would let as many more buyers through.
const HEAL: &str = r#"
local last = redis.call('GET', KEYS[2])
if last then
  local t = redis.call('TIME')
  if t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(last) < tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
return 1
"#;

/// How long after the gate's last admission the counter may be raised to PostgreSQL's
/// remaining (see [`HEAL`]): an admitted buyer whose purchase has neither committed nor
/// given its units back this long after is taken to be lost with its process, and the
/// counter stuck low on its account.
const HEAL_AFTER: Duration = Duration::from_secs(5);

/// Run once by `create_sale`: the counter (KEYS[1]) and an open, empty ledger
/// (KEYS[2]), unless a gate call got there first (then the ledger stays unopened).
const OPEN: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 86400) then
  redis.call('DEL', KEYS[2])
  redis.call('SADD', KEYS[2], 'open')
  redis.call('EXPIRE', KEYS[2], 86400)
end
return 1
"#;

#[derive(Deserialize, ToSchema)]
pub struct CreateFlashSale {
    pub product_id: i64,
    #[schema(value_type = i32, minimum = 1, maximum = 10_000_000)]
    pub units: Units,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: OffsetDateTime,
    #[schema(value_type = i32, minimum = 1, maximum = 10_000_000)]
    pub per_buyer_limit: Units,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct FlashSale {
    pub id: i64,
    pub product_id: i64,
    pub units: i32,
    pub remaining: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    pub per_buyer_limit: i32,
}

#[derive(Deserialize, ToSchema)]
pub struct PurchaseRequest {
    #[schema(value_type = i32, minimum = 1, maximum = 1_000_000)]
    #[serde(default = "one")]
    pub quantity: Quantity,
}

fn one() -> Quantity {
    Quantity(1)
}

#[utoipa::path(post, path = "/flash-sales", tag = "flash", request_body = CreateFlashSale, security(("bearer" = [])),
    responses((status = 201, body = FlashSale), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(product_id = req.product_id))]
pub async fn create_sale(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<CreateFlashSale>,
) -> AppResult<(StatusCode, axum::Json<FlashSale>)> {
    user.require_seller()?;
    let mut tx = state.primary.begin().await?;
    let owner: Option<(i64,)> = sqlx::query_as("SELECT s.owner_id FROM products p JOIN shops s ON s.id = p.shop_id WHERE p.id = $1 FOR UPDATE OF p")
        .bind(req.product_id)
        .fetch_optional(&mut tx)
        .await?;
    match owner {
        None => return Err(AppError::unknown("product", "product_id")),
        Some((owner,)) if owner != user.id => {
            return Err(AppError::forbidden("not the owner of this product"));
        }
        Some(_) => {}
    }
    // The sale's units leave the product's stock now, so ordinary checkouts and the
    // sale can never sell the same unit.
    let reserved = sqlx::query("UPDATE products SET stock = stock - $2, updated_at = now() WHERE id = $1 AND stock >= $2")
        .bind(req.product_id)
        .bind(req.units.0)
        .execute(&mut tx)
        .await?
        .rows_affected();
    if reserved == 0 {
        return Err(AppError::InsufficientStock { product_id: req.product_id });
    }
    let sale: FlashSale = sqlx::query_as(
        "INSERT INTO flash_sales (product_id, seller_id, units, remaining, starts_at, per_buyer_limit)
         VALUES ($1, $2, $3, $3, $4, $5)
         RETURNING id, product_id, units, remaining, starts_at, per_buyer_limit",
    )
    .bind(req.product_id)
    .bind(user.id)
    .bind(req.units.0)
    .bind(req.starts_at)
    .bind(req.per_buyer_limit.0)
    .fetch_one(&mut tx)
    .await?;
    tx.commit().await?;
    open_ledger(&state, sale.id, sale.units).await;
    invalidate_product(&state, req.product_id).await;
    Ok((StatusCode::CREATED, axum::Json(sale)))
}

#[utoipa::path(get, path = "/flash-sales/{id}", tag = "flash", params(("id" = i64, Path)),
    responses((status = 200, body = FlashSale), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(sale_id = id))]
pub async fn get_sale(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<axum::Json<FlashSale>> {
    let sale: Option<FlashSale> =
        sqlx::query_as("SELECT id, product_id, units, remaining, starts_at, per_buyer_limit FROM flash_sales WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.primary)
            .await?;
    sale.map(axum::Json).ok_or(AppError::not_found("flash sale"))
}

/// The sale's immutable data, read once per process: the requests that arrive at the
/// sale's start all at once wait for one read rather than each making their own.
async fn sale_meta(state: &AppState, id: i64) -> AppResult<SaleMeta> {
    let cell = state.flash.meta_cell(id);
    let read = cell
        .get_or_try_init(|| async {
            let row: Option<(i64, OffsetDateTime, i32)> =
                sqlx::query_as("SELECT product_id, starts_at, per_buyer_limit FROM flash_sales WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&state.primary)
                    .await?;
            let (product_id, starts_at, per_buyer_limit) = row.ok_or(AppError::not_found("flash sale"))?;
            Ok::<_, AppError>(SaleMeta { product_id, starts_at, per_buyer_limit })
        })
        .await;
    match read {
        Ok(meta) => Ok(*meta),
        Err(e) => {
            // Not kept for ids that name no sale, so probing ids costs no memory.
            state.flash.forget_meta(id);
            Err(e)
        }
    }
}

/// Sets the new sale's counter and opens its ledger (see [`OPEN`]). Best effort:
/// without it the counter is rebuilt on the first purchase and the ledger stays
/// unopened, so every refusal checks PostgreSQL for a replay.
async fn open_ledger(state: &AppState, id: i64, units: i32) {
    let Some(redis) = state.redis() else { return };
    let [counter, ledger, _] = sale_keys(redis, id);
    let (counter, ledger) = (&counter, &ledger);
    let result: redis::RedisResult<i64> =
        redis.call(|mut c| async move { redis::Script::new(OPEN).key(counter).key(ledger).arg(units).invoke_async(&mut c).await }).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, sale_id = id, "could not open the flash ledger");
    }
}

/// Closes the sale's ledger if this process let a buyer through to PostgreSQL without
/// recording them (the gate was bypassed): from then on every refusal checks
/// PostgreSQL for a replay. Asks Redis only when such a debt exists; kept until paid.
async fn close_ledger_if_owed(state: &AppState, id: i64) {
    let Some(redis) = state.redis() else { return };
    if !state.flash.take_unrecorded(id) {
        return;
    }
    let [_, ledger, _] = sale_keys(redis, id);
    let closed = redis.call(|mut c| async move { c.srem::<_, _, ()>(ledger, "open").await }).await;
    if let Err(e) = closed {
        tracing::warn!(error = %e, sale_id = id, "could not close the flash ledger");
        state.flash.unrecorded(id);
    }
}

/// Records a buyer in the ledger before a gate-refused buyer is let through to
/// PostgreSQL anyway; false if Redis did not take it.
async fn record_buyer(state: &AppState, id: i64, buyer: i64) -> bool {
    let Some(redis) = state.redis() else {
        return false;
    };
    let [_, ledger, _] = sale_keys(redis, id);
    redis.call(|mut c| async move { c.sadd::<_, _, ()>(ledger, buyer).await }).await.is_ok()
}

enum Gate {
    /// Redis took our units; give them back if PostgreSQL does not sell.
    Admitted,
    /// Redis says sold out, and its ledger says this buyer never got through.
    Lost,
    /// Redis says sold out; this buyer may hold an order from an earlier try.
    Rejected,
    /// No Redis, or Redis failed: PostgreSQL alone decides.
    Bypassed,
}

async fn gate(state: &AppState, id: i64, quantity: i32, buyer: i64) -> AppResult<Gate> {
    let Some(redis) = state.redis() else {
        return Ok(Gate::Bypassed);
    };
    let [key, ledger, admitted] = sale_keys(redis, id);
    let script = &redis::Script::new(GATE);
    let (key, ledger, admitted) = (&key, &ledger, &admitted);
    for _ in 0..2 {
        let verdict: redis::RedisResult<i64> = redis
            .call(|mut c| async move {
                let mut invocation = script.key(key);
                invocation.key(ledger).key(admitted).arg(quantity).arg(buyer).invoke_async(&mut c).await
            })
            .await;
        match verdict {
            Ok(1) => return Ok(Gate::Admitted),
            Ok(0) => return Ok(Gate::Lost),
            Ok(2) => return Ok(Gate::Rejected),
            Ok(_) => {
                // The counter is gone (eviction, restart, flush): rebuild it from the
                // source of truth. NX: if another process rebuilt it first, keep theirs.
                let remaining = pg_remaining(state, id).await?;
                let set: redis::RedisResult<()> = redis
                    .call(|mut c| async move { redis::cmd("SET").arg(key).arg(remaining).arg("NX").arg("EX").arg(86_400).query_async(&mut c).await })
                    .await;
                if let Err(e) = set {
                    tracing::warn!(error = %e, sale_id = id, "could not rebuild flash counter");
                    return Ok(Gate::Bypassed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, sale_id = id, "flash gate unavailable; PostgreSQL decides alone");
                return Ok(Gate::Bypassed);
            }
        }
    }
    Ok(Gate::Bypassed)
}

/// The sale's Redis keys: its counter, its ledger, and the time of the gate's last
/// admission.
fn sale_keys(redis: &RedisLink, id: i64) -> [String; 3] {
    ["remaining", "ledger", "admitted_at"].map(|k| redis.key(format_args!("flash:{id}:{k}")))
}

/// Moves the Redis counter: `Some(v)` sets it to PostgreSQL's value (0 at once, as sold
/// out is final; more only as [`HEAL`] allows), `None` with a delta gives units back.
async fn adjust_counter(state: &AppState, id: i64, set_to: Option<i32>, give_back: i32) {
    let Some(redis) = state.redis() else { return };
    let [key, _, admitted] = sale_keys(redis, id);
    let (key, admitted) = (&key, &admitted);
    let quiet = HEAL_AFTER.as_millis() as u64;
    let result: redis::RedisResult<()> = redis
        .call(|mut c| async move {
            match set_to {
                Some(0) => c.set_ex(key, 0, 86_400).await,
                Some(v) => redis::Script::new(HEAL).key(key).key(admitted).arg(v).arg(quiet).invoke_async(&mut c).await,
                None => c.incr(key, give_back).await,
            }
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, sale_id = id, "could not adjust flash counter");
    }
}

fn sold_out(state: &AppState) -> AppError {
    state.metrics.sold_out_rejections.fetch_add(1, Ordering::Relaxed);
    AppError::conflict("sold out", None)
}

/// The order an earlier request with this key placed, so a retry after the sale sold
/// out still returns the buyer's order instead of "sold out".
async fn stored_replay(state: &AppState, user_id: i64, key: &str, hash: &str) -> AppResult<Option<Response>> {
    match stored_order(&state.primary, user_id, key).await? {
        Some((h, _)) if h != hash => Err(key_reused()),
        Some((_, order)) => Ok(Some((StatusCode::OK, axum::Json(order)).into_response())),
        None => Ok(None),
    }
}

/// The answer once the sale is known sold out: the order an earlier request with this
/// key placed, or "sold out". One read, no transaction.
async fn replay_or_sold_out(state: &AppState, user_id: i64, key: &str, hash: &str) -> AppResult<Response> {
    match stored_replay(state, user_id, key, hash).await? {
        Some(replay) => Ok(replay),
        None => Err(sold_out(state)),
    }
}

/// The answer once this process has seen PostgreSQL sold out. When it has also read
/// every buyer (the sale is sealed; a read in flight is waited for, as one read answers
/// every loser), anyone else lost and has no order to replay: "sold out" from memory.
/// (A key they used elsewhere is "sold out" here, not reused.) A buyer, or anyone while
/// the buyers are unknown, gets [`replay_or_sold_out`].
async fn after_sold_out(state: &AppState, id: i64, user_id: i64, key: &str, hash: &str) -> AppResult<Response> {
    match state.flash.sealed_within(id, SEAL_WAIT).await {
        Some(buyers) if !buyers.contains(&user_id) => return Err(sold_out(state)),
        Some(_) => {}
        // The read failed (or is slow): another is started unless one is in flight,
        // so a passing failure does not send every later loser to PostgreSQL.
        None => seen_sold_out(state, id),
    }
    replay_or_sold_out(state, user_id, key, hash).await
}

fn key_reused() -> AppError {
    AppError::conflict("Idempotency-Key was already used for a different request", Some(IDEMPOTENCY_HEADER))
}

fn parse_purchase(body: &Bytes) -> AppResult<i32> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(1);
    }
    // The body is optional, and `null` is no body (as the document's schema allows).
    let req: Option<PurchaseRequest> = crate::extract::parse_json(body)?;
    Ok(req.map_or(1, |r| r.quantity.0))
}

#[utoipa::path(post, path = "/flash-sales/{id}/purchase", tag = "flash", request_body = Option<PurchaseRequest>,
    security(("bearer" = [])),
    params(("id" = i64, Path), ("Idempotency-Key" = String, Header, pattern = "^[!-~](?:[ -~]{0,253}[!-~])?$", description = "client-chosen key of 1 to 255 visible ASCII characters")),
    responses(
        (status = 201, description = "bought", body = Order),
        (status = 200, description = "replay of an earlier request with this key", body = Order),
        (status = 404, description = "no such flash sale", body = ErrorBody),
        (status = 409, description = "not started, sold out, or per-buyer limit reached", body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(sale_id = id))]
pub async fn purchase(
    State(state): State<AppState>,
    Extension(batches): Extension<Arc<Batches>>,
    UnmarkedUser(user): UnmarkedUser,
    Path(id): Path<i64>,
    IdempotencyKey(key): IdempotencyKey,
    body: Bytes,
) -> AppResult<Response> {
    user.require_buyer()?;
    let quantity = parse_purchase(&body)?;
    let hash = request_hash(&format!("flash;{id};{quantity}"));
    let meta = sale_meta(&state, id).await?;
    if OffsetDateTime::now_utc() < meta.starts_at {
        return Err(AppError::conflict("not started", None));
    }
    if quantity > meta.per_buyer_limit {
        return Err(AppError::conflict("per-buyer limit exceeded", Some("quantity")));
    }
    close_ledger_if_owed(&state, id).await;
    if state.flash.is_sold_out(id) {
        return after_sold_out(&state, id, user.id, &key, &hash).await;
    }
    let admitted = match gate(&state, id, quantity, user.id).await? {
        Gate::Admitted => true,
        Gate::Bypassed => {
            state.flash.unrecorded(id);
            false
        }
        Gate::Lost => {
            // Never through the gate, so no order to replay. One buyer per second per
            // process still checks PostgreSQL (recorded first, as any buyer let through).
            if !state.flash.should_verify(id) || !record_buyer(&state, id, user.id).await || pg_remaining(&state, id).await? == 0 {
                return Err(sold_out(&state));
            }
            false
        }
        Gate::Rejected => {
            if let Some(replay) = stored_replay(&state, user.id, &key, &hash).await? {
                return Ok(replay);
            }
            // Trust the counter, except for one buyer per second per process who
            // checks PostgreSQL: a counter that drifted low must not strand units.
            if !state.flash.should_verify(id) || pg_remaining(&state, id).await? == 0 {
                return Err(sold_out(&state));
            }
            false
        }
    };
    state.mark_write(user.id).await;
    let purchase = Purchase { user_id: user.id, email: user.email.clone(), key: key.clone(), hash: hash.clone(), quantity };
    let result = match flash_batch::submit(&state, &batches, id, meta, purchase).await {
        Batched::Done(result) => result,
        Batched::Alone if state.flash.is_sold_out(id) => {
            if admitted {
                adjust_counter(&state, id, Some(0), 0).await;
            }
            return after_sold_out(&state, id, user.id, &key, &hash).await;
        }
        Batched::Alone => with_retries(|| attempt(&state, &user, id, meta, quantity, &key, &hash)).await,
    };
    match result {
        Ok(Ok((Outcome::Created(order), remaining))) => {
            if !admitted {
                adjust_counter(&state, id, Some(remaining), 0).await;
            }
            if remaining == 0 {
                seen_sold_out(&state, id);
            }
            Ok((StatusCode::CREATED, axum::Json(order)).into_response())
        }
        Ok(Ok((Outcome::Replayed(order), _))) => {
            if admitted {
                adjust_counter(&state, id, None, quantity).await;
            }
            Ok((StatusCode::OK, axum::Json(order)).into_response())
        }
        Ok(Err(Refusal::KnownSoldOut)) => {
            if admitted {
                adjust_counter(&state, id, Some(0), 0).await;
            }
            Err(sold_out(&state))
        }
        Ok(Err(Refusal::Refused { left })) => {
            // PostgreSQL said no: its remaining is the truth, so the counter copies it.
            adjust_counter(&state, id, Some(left), 0).await;
            if left == 0 { Err(sold_out(&state)) } else { Err(AppError::conflict(format!("only {left} units left"), Some("quantity"))) }
        }
        Err(e) => {
            if admitted {
                adjust_counter(&state, id, None, quantity).await;
            }
            Err(e)
        }
    }
}

async fn attempt(state: &AppState, user: &AuthUser, id: i64, meta: SaleMeta, quantity: i32, key: &str, hash: &str) -> AppResult<Attempt> {
    let mut tx = state.primary.begin().await?;
    // Checked again after waiting for a connection: the sale may have sold out
    // while this request queued, and then the whole transaction is wasted work.
    if state.flash.is_sold_out(id) {
        if let Claim::Replay(order) = claim_key(&mut tx, user.id, key, Some(hash)).await? {
            return Ok(Ok((Outcome::Replayed(order), -1)));
        }
        return Ok(Err(Refusal::KnownSoldOut));
    }
    match claim_key(&mut tx, user.id, key, Some(hash)).await? {
        Claim::Replay(order) => return Ok(Ok((Outcome::Replayed(order), -1))),
        Claim::Mismatch => return Err(key_reused()),
        Claim::New => {}
    }
    let bought: Option<(i32,)> = sqlx::query_as(
        "INSERT INTO flash_purchases (sale_id, buyer_id, quantity) VALUES ($1, $2, $3)
         ON CONFLICT (sale_id, buyer_id) DO UPDATE SET quantity = flash_purchases.quantity + EXCLUDED.quantity
         WHERE flash_purchases.quantity + EXCLUDED.quantity <= $4
         RETURNING quantity",
    )
    .bind(id)
    .bind(user.id)
    .bind(quantity)
    .bind(meta.per_buyer_limit)
    .fetch_optional(&mut tx)
    .await?;
    if bought.is_none() {
        return Err(AppError::conflict("per-buyer limit exceeded", Some("quantity")));
    }
    let (price,): (i64,) = sqlx::query_as("SELECT price_cents FROM products WHERE id = $1").bind(meta.product_id).fetch_one(&mut tx).await?;
    let lines = [Line { product_id: meta.product_id, quantity, unit_price_cents: price }];
    let order = place_order(&mut tx, user, "flash", key, &lines, &[]).await?;
    let Some(remaining) = take_units(&mut tx, id, quantity).await? else {
        tx.rollback().await?;
        let left = pg_remaining(state, id).await?;
        return Ok(Err(Refusal::Refused { left }));
    };
    // Ends the empty transaction; the purchase is already committed.
    tx.commit().await?;
    tracing::info!(order_id = order.id, remaining, "flash purchase");
    Ok(Ok((Outcome::Created(order), remaining)))
}
