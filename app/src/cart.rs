//! The buyer's cart: add (or increment) items, list with current prices, remove.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Quantity;
use crate::error::{AppError, AppResult, ErrorBody, is_foreign_key_violation};
use crate::extract::{AuthUser, Json, Path};
use crate::state::AppState;

/// No single cart line may exceed this many units.
const MAX_LINE_QUANTITY: i32 = 1_000_000;

#[derive(Deserialize, ToSchema)]
pub struct AddItem {
    pub product_id: i64,
    #[schema(value_type = i32, minimum = 1, maximum = 1_000_000)]
    pub quantity: Quantity,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct CartItem {
    pub id: i64,
    pub product_id: i64,
    pub quantity: i32,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct CartLine {
    pub id: i64,
    pub product_id: i64,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Cart {
    pub items: Vec<CartLine>,
    pub total_cents: i64,
}

#[utoipa::path(post, path = "/cart/items", tag = "cart", request_body = AddItem, security(("bearer" = [])),
    responses((status = 201, body = CartItem), (status = 404, body = ErrorBody), (status = 409, description = "the cart would hold more than 1,000,000 of it", body = ErrorBody), (status = 422, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(product_id = req.product_id))]
pub async fn add_item(State(state): State<AppState>, user: AuthUser, Json(req): Json<AddItem>) -> AppResult<(StatusCode, axum::Json<CartItem>)> {
    user.require_buyer()?;
    // An unknown product is the foreign key's to refuse: no separate lookup first.
    let item: Option<CartItem> =
        sqlx::query_as(
            "INSERT INTO cart_items (user_id, product_id, quantity) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity
         WHERE cart_items.quantity + EXCLUDED.quantity <= $4
         RETURNING id, product_id, quantity",
        )
        .bind(user.id)
        .bind(req.product_id)
        .bind(req.quantity.0)
        .bind(MAX_LINE_QUANTITY)
        .fetch_optional(&state.primary)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e, "cart_items_product_id_fkey") { AppError::unknown("product", "product_id") } else { e.into() }
        })?;
    // A valid request that the cart's contents refuse: a conflict, not a bad body.
    let item = item.ok_or_else(|| AppError::conflict("quantity in cart would exceed 1000000", Some("quantity")))?;
    Ok((StatusCode::CREATED, axum::Json(item)))
}

#[utoipa::path(get, path = "/cart", tag = "cart", security(("bearer" = [])), responses((status = 200, body = Cart)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn get_cart(State(state): State<AppState>, user: AuthUser) -> AppResult<axum::Json<Cart>> {
    // The cart is read right after it is written: always the primary.
    let items: Vec<CartLine> = sqlx::query_as(
        "SELECT c.id, c.product_id, p.name, c.quantity, p.price_cents AS unit_price_cents,
                p.price_cents * c.quantity AS line_total_cents
         FROM cart_items c JOIN products p ON p.id = c.product_id
         WHERE c.user_id = $1 ORDER BY c.id",
    )
    .bind(user.id)
    .fetch_all(&state.primary)
    .await?;
    let total_cents = items.iter().map(|i| i.line_total_cents).sum();
    Ok(axum::Json(Cart { items, total_cents }))
}

#[utoipa::path(delete, path = "/cart/items/{id}", tag = "cart", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(item_id = id))]
pub async fn remove_item(State(state): State<AppState>, user: AuthUser, Path(id): Path<i64>) -> AppResult<StatusCode> {
    let deleted =
        sqlx::query("DELETE FROM cart_items WHERE id = $1 AND user_id = $2").bind(id).bind(user.id).execute(&state.primary).await?.rows_affected();
    if deleted == 0 {
        return Err(AppError::not_found("cart item"));
    }
    Ok(StatusCode::NO_CONTENT)
}
