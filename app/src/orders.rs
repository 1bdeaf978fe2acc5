//! Orders: the shared "place an order" step (order, items, payment, invoice, delivery,
//! outbox event) used inside the checkout and flash-sale transactions, idempotency-key
//! claims, and the order-history, invoice, delivery and returns routes.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::catalog::{Page, invalidate_product};
use crate::db::Tx;
use crate::domain::Quantity;
use crate::error::{AppError, AppResult, ErrorBody, is_retryable, is_unique_violation};
use crate::extract::{AuthUser, Json, Path, Query};
use crate::state::AppState;

/// How many times a transaction is retried on serialization failure or deadlock.
pub const TX_ATTEMPTS: u32 = 4;

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    pub id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub kind: String,
    pub status: String,
    pub total_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub items: Vec<OrderItem>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderSummary {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub total_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Invoice {
    pub id: i64,
    pub order_id: i64,
    pub number: String,
    pub amount_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub order_id: i64,
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_for: OffsetDateTime,
}

/// One priced line of a new order.
pub struct Line {
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// Hex sha256 of a request's canonical description, stored with its idempotency key.
pub fn request_hash(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The outcome of claiming an idempotency key inside a transaction.
pub enum Claim {
    /// The key is ours; the transaction must place its order with [`place_order`],
    /// which records the order as the key's answer.
    New,
    /// An earlier request with this key committed this order.
    Replay(Order),
    /// An earlier request used this key for something else.
    Mismatch,
}

/// Claims `(user_id, key)`. The primary key decides races: a concurrent claimant
/// blocks on the insert until the winner commits (then sees its order) or rolls
/// back (then wins itself). `hash = None` accepts any stored request.
pub async fn claim_key(conn: &mut Tx, user_id: i64, key: &str, hash: Option<&str>) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key) DO NOTHING",
    )
    .bind(user_id)
    .bind(key)
    .bind(hash.unwrap_or(""))
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    match stored_order(&mut *conn, user_id, key).await? {
        Some((stored_hash, _)) if hash.is_some_and(|h| h != stored_hash) => Ok(Claim::Mismatch),
        Some((_, order)) => Ok(Claim::Replay(order)),
        // A key is committed in the statement that places its order, so a committed
        // key without one cannot exist; treat it as a conflict.
        None => Ok(Claim::Mismatch),
    }
}

/// The request hash stored with `(user_id, key)` and the order its request placed,
/// read back from the order tables. Nothing changes an order once placed (returns and
/// refunds are rows of their own), so this is the order as its request was answered.
pub async fn stored_order<'e>(db: impl sqlx::PgExecutor<'e>, user_id: i64, key: &str) -> Result<Option<(String, Order)>, sqlx::Error> {
    let rows: Vec<StoredLine> = sqlx::query_as(
        "SELECT k.request_hash, o.id, o.user_id, o.kind, o.status, o.total_cents, o.created_at,
                i.id AS item_id, i.product_id, i.quantity, i.unit_price_cents
         FROM idempotency_keys k JOIN orders o ON o.id = k.order_id
         JOIN order_items i ON i.order_id = o.id
         WHERE k.user_id = $1 AND k.key = $2 ORDER BY i.id",
    )
    .bind(user_id)
    .bind(key)
    .fetch_all(db)
    .await?;
    let Some(hash) = rows.first().map(|r| r.request_hash.clone()) else {
        return Ok(None);
    };
    Ok(assemble(rows.into_iter().map(|r| r.line)).map(|order| (hash, order)))
}

/// An order joined with one of its items (columns `o.*` and `i.id AS item_id, i.*`):
/// the row shape of every query that returns a whole order, in one round trip.
#[derive(sqlx::FromRow)]
struct OrderLine {
    id: i64,
    user_id: i64,
    kind: String,
    status: String,
    total_cents: i64,
    created_at: OffsetDateTime,
    item_id: i64,
    product_id: i64,
    quantity: i32,
    unit_price_cents: i64,
}

#[derive(sqlx::FromRow)]
struct StoredLine {
    request_hash: String,
    #[sqlx(flatten)]
    line: OrderLine,
}

/// The order whose lines these are (in item order); `None` without lines.
fn assemble(lines: impl IntoIterator<Item = OrderLine>) -> Option<Order> {
    assemble_all(lines).into_iter().next()
}

/// The orders whose lines these are, each order's lines together and in item order.
fn assemble_all(lines: impl IntoIterator<Item = OrderLine>) -> Vec<Order> {
    let mut orders: Vec<Order> = Vec::new();
    for l in lines {
        let item = OrderItem { id: l.item_id, product_id: l.product_id, quantity: l.quantity, unit_price_cents: l.unit_price_cents };
        match orders.last_mut() {
            Some(o) if o.id == l.id => o.items.push(item),
            _ => orders.push(Order {
                id: l.id,
                user_id: l.user_id,
                kind: l.kind,
                status: l.status,
                total_cents: l.total_cents,
                created_at: l.created_at,
                items: vec![item],
            }),
        }
    }
    orders
}

/// One order to write with [`place_orders`]: its buyer, the idempotency key its request
/// claimed with [`claim_key`], and its priced lines.
pub struct NewOrder<'a> {
    pub user_id: i64,
    pub email: &'a str,
    pub key: &'a str,
    pub lines: &'a [Line],
}

/// Writes a paid order with its items, payment, invoice, delivery and outbox event,
/// records it as the answer to the idempotency key `key` (which the caller claimed
/// with [`claim_key`]), and deletes the cart lines it consumed (`emptied_cart`, ids;
/// flash purchases pass none). Runs inside the caller's transaction, after stock was
/// taken.
pub async fn place_order(tx: &mut Tx, user: &AuthUser, kind: &str, key: &str, lines: &[Line], emptied_cart: &[i64]) -> Result<Order, sqlx::Error> {
    let order = NewOrder { user_id: user.id, email: &user.email, key, lines };
    // Only an order without lines returns no row, and callers never place one.
    place_orders(tx, kind, &[order], emptied_cart).await?.pop().ok_or(sqlx::Error::RowNotFound)
}

/// [`place_order`] for several orders at once (a flash-sale batch: one per buyer, each
/// buyer at most once), returned in the order of `orders`. Orders without lines are
/// not written.
///
/// One statement (data-modifying CTEs) rather than one per table or per order: the
/// caller holds row locks on stock until it commits, and every round trip inside the
/// transaction is time those locks are held and a pooled connection is busy.
pub async fn place_orders(tx: &mut Tx, kind: &str, orders: &[NewOrder<'_>], emptied_cart: &[i64]) -> Result<Vec<Order>, sqlx::Error> {
    let total = |o: &NewOrder| o.lines.iter().map(|l| l.unit_price_cents * l.quantity as i64).sum::<i64>();
    let lines = || orders.iter().enumerate().flat_map(|(n, o)| o.lines.iter().map(move |l| (n as i32 + 1, l)));
    // The simulated payment provider is idempotent by order id, as a real provider's
    // idempotency key would be (ON CONFLICT DO NOTHING). `input.n` numbers the orders
    // (from 1, as WITH ORDINALITY does) and ties each line to its order.
    let rows: Vec<OrderLine> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
                 WITH ORDINALITY AS t(user_id, key, total_cents, email, n)),
         o AS (
             INSERT INTO orders (user_id, kind, total_cents, idempotency_key)
             SELECT user_id, $5, total_cents, key FROM input
             RETURNING id, user_id, kind, status, total_cents, created_at, idempotency_key),
         oi AS (SELECT o.*, input.n, input.email FROM o JOIN input ON input.user_id = o.user_id AND input.key = o.idempotency_key),
         items AS (
             INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)
             SELECT oi.id, l.product_id, l.quantity, l.unit_price_cents
             FROM oi JOIN unnest($6::int[], $7::bigint[], $8::int[], $9::bigint[]) AS l(n, product_id, quantity, unit_price_cents) ON l.n = oi.n
             RETURNING id, order_id, product_id, quantity, unit_price_cents),
         payment AS (
             INSERT INTO payments (order_id, amount_cents, provider, provider_ref, status)
             SELECT id, total_cents, 'simulated', 'sim_' || id, 'captured' FROM o
             ON CONFLICT (order_id) DO NOTHING),
         invoice AS (
             INSERT INTO invoices (order_id, number, amount_cents)
             SELECT id, 'INV-' || lpad(id::text, 10, '0'), total_cents FROM o),
         delivery AS (
             INSERT INTO deliveries (order_id, status, scheduled_for)
             SELECT id, 'scheduled', now() + interval '2 days' FROM o),
         event AS (
             INSERT INTO outbox (topic, payload)
             SELECT 'order.placed', jsonb_build_object('order_id', id, 'user_id', user_id,
                 'email', email, 'total_cents', total_cents) FROM oi ORDER BY n),
         answer AS (
             UPDATE idempotency_keys k SET order_id = o.id FROM o
             WHERE k.user_id = o.user_id AND k.key = o.idempotency_key),
         emptied AS (DELETE FROM cart_items WHERE id = ANY($10))
         SELECT oi.id, oi.user_id, oi.kind, oi.status, oi.total_cents, oi.created_at,
                items.id AS item_id, items.product_id, items.quantity, items.unit_price_cents
         FROM oi JOIN items ON items.order_id = oi.id ORDER BY oi.n, items.id",
    )
    .bind(orders.iter().map(|o| o.user_id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.key).collect::<Vec<_>>())
    .bind(orders.iter().map(total).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.email).collect::<Vec<_>>())
    .bind(kind)
    .bind(lines().map(|(n, _)| n).collect::<Vec<_>>())
    .bind(lines().map(|(_, l)| l.product_id).collect::<Vec<_>>())
    .bind(lines().map(|(_, l)| l.quantity).collect::<Vec<_>>())
    .bind(lines().map(|(_, l)| l.unit_price_cents).collect::<Vec<_>>())
    .bind(emptied_cart)
    .fetch_all(&mut *tx)
    .await?;
    Ok(assemble_all(rows))
}

/// Runs `attempt` up to [`TX_ATTEMPTS`] times while it fails with a serialization
/// failure or deadlock.
pub async fn with_retries<T, F, Fut>(mut attempt: F) -> AppResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = AppResult<T>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Err(AppError::Database(e)) if n < TX_ATTEMPTS && is_retryable(&e) => {
                tracing::info!(attempt = n, error = %e, "retrying transaction");
                tokio::time::sleep(std::time::Duration::from_millis(5 * n as u64)).await;
            }
            other => return other,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct OrdersQuery {
    /// Opaque cursor from the previous page; newest orders come first.
    #[param(pattern = "^[0-9]{0,18}$")]
    pub cursor: Option<String>,
    /// Page size, default 20; more than 100 is taken as 100.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])), params(OrdersQuery),
    responses((status = 200, body = Page<OrderSummary>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_orders(State(state): State<AppState>, user: AuthUser, Query(q): Query<OrdersQuery>) -> AppResult<axum::Json<Page<OrderSummary>>> {
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => i64::MAX,
        c => crate::catalog::decode_cursor(c)?,
    };
    let limit = crate::catalog::page_limit(q.limit)?;
    let rows: Vec<OrderSummary> = sqlx::query_as(
        "SELECT id, kind, status, total_cents, created_at FROM orders
         WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(user.id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(state.read_pool(Some(user.id)).await)
    .await?;
    Ok(axum::Json(crate::catalog::paginate(rows, limit, |o| o.id)))
}

async fn load_order(state: &AppState, user: &AuthUser, id: i64) -> AppResult<Order> {
    let rows: Vec<OrderLine> = sqlx::query_as(
        "SELECT o.id, o.user_id, o.kind, o.status, o.total_cents, o.created_at,
                i.id AS item_id, i.product_id, i.quantity, i.unit_price_cents
         FROM orders o JOIN order_items i ON i.order_id = o.id
         WHERE o.id = $1 AND o.user_id = $2 ORDER BY i.id",
    )
    .bind(id)
    .bind(user.id)
    .fetch_all(state.read_pool(Some(user.id)).await)
    .await?;
    // Someone else's order is indistinguishable from a missing one.
    assemble(rows).ok_or_else(|| AppError::not_found("order"))
}

#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(order_id = id))]
pub async fn get_order(State(state): State<AppState>, user: AuthUser, Path(id): Path<i64>) -> AppResult<axum::Json<Order>> {
    Ok(axum::Json(load_order(&state, &user, id).await?))
}

#[utoipa::path(get, path = "/orders/{id}/invoice", tag = "orders", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Invoice), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(order_id = id))]
pub async fn get_invoice(State(state): State<AppState>, user: AuthUser, Path(id): Path<i64>) -> AppResult<axum::Json<Invoice>> {
    let invoice: Option<Invoice> = sqlx::query_as(
        "SELECT i.id, i.order_id, i.number, i.amount_cents, i.issued_at
         FROM invoices i JOIN orders o ON o.id = i.order_id WHERE o.id = $1 AND o.user_id = $2",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(state.read_pool(Some(user.id)).await)
    .await?;
    invoice.map(axum::Json).ok_or(AppError::not_found("order"))
}

#[utoipa::path(get, path = "/orders/{id}/delivery", tag = "orders", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Delivery), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(order_id = id))]
pub async fn get_delivery(State(state): State<AppState>, user: AuthUser, Path(id): Path<i64>) -> AppResult<axum::Json<Delivery>> {
    let delivery: Option<Delivery> = sqlx::query_as(
        "SELECT d.id, d.order_id, d.status, d.scheduled_for
         FROM deliveries d JOIN orders o ON o.id = d.order_id WHERE o.id = $1 AND o.user_id = $2",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(state.read_pool(Some(user.id)).await)
    .await?;
    delivery.map(axum::Json).ok_or(AppError::not_found("order"))
}

#[derive(Deserialize, ToSchema)]
pub struct ReturnRequest {
    pub order_id: i64,
    pub order_item_id: i64,
    /// Units to return; defaults to the whole line.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 1_000_000)]
    pub quantity: Option<Quantity>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Refund {
    pub id: i64,
    pub order_id: i64,
    pub order_item_id: i64,
    pub quantity: i32,
    pub amount_cents: i64,
}

#[utoipa::path(post, path = "/returns", tag = "orders", request_body = ReturnRequest, security(("bearer" = [])),
    responses((status = 201, body = Refund), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(order_id = req.order_id, order_item_id = req.order_item_id))]
pub async fn create_return(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<ReturnRequest>,
) -> AppResult<(StatusCode, axum::Json<Refund>)> {
    let (refund, product_id) = with_retries(|| async {
        let mut tx = state.primary.begin().await?;
        let item: Option<(i64, i32, i64)> = sqlx::query_as(
            "SELECT oi.product_id, oi.quantity, oi.unit_price_cents
             FROM order_items oi JOIN orders o ON o.id = oi.order_id
             WHERE oi.id = $1 AND oi.order_id = $2 AND o.user_id = $3
             FOR UPDATE OF oi",
        )
        .bind(req.order_item_id)
        .bind(req.order_id)
        .bind(user.id)
        .fetch_optional(&mut tx)
        .await?;
        let Some((product_id, bought, unit_price)) = item else {
            return Err(AppError::unknown("order item", "order_item_id"));
        };
        let quantity = req.quantity.map_or(bought, |q| q.0);
        if quantity > bought {
            return Err(AppError::unprocessable("more than was bought", "quantity"));
        }
        let refund: Result<Refund, sqlx::Error> = sqlx::query_as(
            "INSERT INTO refunds (order_id, order_item_id, quantity, amount_cents) VALUES ($1, $2, $3, $4)
             RETURNING id, order_id, order_item_id, quantity, amount_cents",
        )
        .bind(req.order_id)
        .bind(req.order_item_id)
        .bind(quantity)
        .bind(unit_price * quantity as i64)
        .fetch_one(&mut tx)
        .await;
        let refund = match refund {
            Ok(r) => r,
            Err(e) if is_unique_violation(&e) => {
                return Err(AppError::conflict("item already returned", Some("order_item_id")));
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query("UPDATE products SET stock = stock + $2, updated_at = now() WHERE id = $1")
            .bind(product_id)
            .bind(quantity)
            .execute(&mut tx)
            .await?;
        sqlx::query("INSERT INTO outbox (topic, payload) VALUES ('order.refunded', $1)")
            .bind(serde_json::json!({
                "order_id": req.order_id, "user_id": user.id, "email": user.email,
                "total_cents": refund.amount_cents,
            }))
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok((refund, product_id))
    })
    .await?;
    invalidate_product(&state, product_id).await;
    Ok((StatusCode::CREATED, axum::Json(refund)))
}
