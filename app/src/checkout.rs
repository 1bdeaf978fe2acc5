//! `POST /checkout`: turns the cart into a paid order in one transaction, exactly once
//! per Idempotency-Key (see `orders::claim_key`), never taking stock below zero.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

use crate::error::{AppError, AppResult, ErrorBody};
use crate::extract::{AuthUser, IDEMPOTENCY_HEADER, IdempotencyKey};
use crate::orders::{Claim, Line, Order, claim_key, place_order, request_hash, with_retries};
use crate::state::AppState;

/// What one attempt of the checkout transaction produced.
enum Outcome {
    Created(Order),
    Replayed(Order),
}

#[utoipa::path(post, path = "/checkout", tag = "orders", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~](?:[ -~]{0,253}[!-~])?$", description = "client-chosen key of 1 to 255 visible ASCII characters; a retry with the same key returns the same order")),
    responses(
        (status = 201, description = "order placed", body = Order),
        (status = 200, description = "replay of an earlier request with this key", body = Order),
        (status = 400, body = ErrorBody),
        (status = 409, description = "the cart is empty, or the key was used for a different cart", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn checkout(State(state): State<AppState>, user: AuthUser, key: Result<IdempotencyKey, AppError>) -> AppResult<Response> {
    user.require_buyer()?;
    let key = if state.settings.unsafe_non_idempotent_checkout {
        // Test-only: every request gets a fresh key, so retries duplicate orders.
        uuid::Uuid::new_v4().to_string()
    } else {
        key?.0
    };
    let outcome = with_retries(|| attempt(&state, &user, &key)).await?;
    Ok(match outcome {
        Outcome::Created(order) => {
            for item in &order.items {
                crate::catalog::invalidate_product(&state, item.product_id).await;
            }
            (StatusCode::CREATED, axum::Json(order)).into_response()
        }
        Outcome::Replayed(order) => (StatusCode::OK, axum::Json(order)).into_response(),
    })
}

async fn attempt(state: &AppState, user: &AuthUser, key: &str) -> AppResult<Outcome> {
    let mut tx = state.primary.begin().await?;
    // Locking the cart rows makes a concurrent checkout of the same cart wait here;
    // once we commit, it finds the cart empty and replays our order.
    let cart: Vec<(i64, i64, i32)> =
        sqlx::query_as("SELECT id, product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY product_id FOR UPDATE")
            .bind(user.id)
            .fetch_all(&mut tx)
            .await?;
    let hash = (!cart.is_empty()).then(|| {
        let mut canonical = String::from("checkout");
        for (_, product_id, quantity) in &cart {
            let _ = write!(canonical, ";{product_id}x{quantity}");
        }
        request_hash(&canonical)
    });
    // An empty cart matches any earlier request: it is what a successful checkout
    // leaves behind, so a retry after success must replay, not fail.
    match claim_key(&mut tx, user.id, key, hash.as_deref()).await? {
        Claim::Replay(order) => return Ok(Outcome::Replayed(order)),
        Claim::Mismatch => {
            return Err(AppError::conflict("Idempotency-Key was already used for a different cart", Some(IDEMPOTENCY_HEADER)));
        }
        Claim::New => {}
    }
    if cart.is_empty() {
        // A valid request that the cart's state refuses: a conflict, as the document says.
        return Err(AppError::conflict("cart is empty", Some("cart")));
    }
    let ids: Vec<i64> = cart.iter().map(|c| c.1).collect();
    let qtys: Vec<i32> = cart.iter().map(|c| c.2).collect();
    // The conditional update is what guarantees stock >= 0 (the CHECK is the backstop).
    // The sub-select locks the product rows in id order, the order every checkout uses,
    // so two checkouts of overlapping carts cannot deadlock; a row another checkout
    // changed meanwhile is re-read and `p.stock >= c.q` checked again on its newest
    // version (read committed). `p.id = ANY($1)` lets the generic plan (BEGIN_OLTP)
    // find the rows by primary key, since it cannot know the array's length.
    let taken: Vec<(i64, i64)> = sqlx::query_as(
        "UPDATE products p SET stock = p.stock - c.q, updated_at = now()
         FROM (SELECT id FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE) AS locked,
              unnest($1::bigint[], $2::int[]) AS c(id, q)
         WHERE p.id = ANY($1) AND p.id = locked.id AND p.id = c.id AND p.stock >= c.q
         RETURNING p.id, p.price_cents",
    )
    .bind(&ids)
    .bind(&qtys)
    .fetch_all(&mut tx)
    .await?;
    let mut lines = Vec::with_capacity(cart.len());
    for (_, product_id, quantity) in &cart {
        let Some((_, price)) = taken.iter().find(|t| t.0 == *product_id) else {
            return Err(refusal(&mut tx, *product_id).await);
        };
        lines.push(Line { product_id: *product_id, quantity: *quantity, unit_price_cents: *price });
    }
    let emptied: Vec<i64> = cart.iter().map(|c| c.0).collect();
    let order = place_order(&mut tx, user, "cart", key, &lines, &emptied).await?;
    tx.commit().await?;
    tracing::info!(order_id = order.id, total_cents = order.total_cents, "order placed");
    Ok(Outcome::Created(order))
}

/// Why the stock update skipped `product_id`: it is gone, or it has too little stock.
/// Only a refused checkout pays for this extra query.
async fn refusal(tx: &mut crate::db::Tx, product_id: i64) -> AppError {
    let exists = sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)").bind(product_id).fetch_one(&mut *tx).await;
    match exists {
        Ok(true) => AppError::InsufficientStock { product_id },
        Ok(false) => AppError::unknown("product", "product_id"),
        Err(e) => e.into(),
    }
}
