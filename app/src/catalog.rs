//! Shops, products (keyset-paginated search, cached reads) and reviews. Catalog reads
//! go to the replica unless the caller wrote recently; product reads are cached in
//! Redis and in-process and invalidated on update.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::domain::{Cents, Name, Rating, Stock, Text};
use crate::error::{AppError, AppResult, ErrorBody, is_unique_violation};
use crate::extract::{AuthUser, ClientIp, Json, MaybeUser, Path, Query};
use crate::ratelimit;
use crate::state::AppState;

/// How long a product stays in Redis; invalidation deletes it sooner.
const REDIS_PRODUCT_TTL_SECS: u64 = 30;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Shop {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub id: i64,
    pub shop_id: i64,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i32,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateShop {
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub name: Name,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateProduct {
    pub shop_id: i64,
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub name: Name,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 10_000, pattern = "^[^\\u0000]*$")]
    pub description: Option<Text>,
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_cents: Cents,
    #[schema(value_type = i32, minimum = 0, maximum = 2_147_483_647)]
    pub stock: Stock,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub name: Option<Name>,
    #[schema(value_type = Option<String>, max_length = 10_000, pattern = "^[^\\u0000]*$")]
    pub description: Option<Text>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_cents: Option<Cents>,
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 2_147_483_647)]
    pub stock: Option<Stock>,
}

#[derive(Deserialize, IntoParams)]
pub struct ProductQuery {
    pub shop_id: Option<i64>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    /// Opaque cursor from the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{0,18}$")]
    pub cursor: Option<String>,
    /// Page size, default 20; more than 100 is taken as 100.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
pub struct PageQuery {
    /// Opaque cursor from the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{0,18}$")]
    pub cursor: Option<String>,
    /// Page size, default 20; more than 100 is taken as 100.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateReview {
    #[schema(value_type = i16, minimum = 1, maximum = 5)]
    pub rating: Rating,
    #[schema(value_type = String)]
    pub body: Text,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct Review {
    pub id: i64,
    pub product_id: i64,
    pub user_id: i64,
    pub rating: i16,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The form of a cursor, as the document states it (`^[0-9]{0,18}$` on every `cursor`
/// parameter): the last id of the page, in decimal. Earlier releases handed out that number in base64, which is
/// still read (base64 of a digit never is all digits, so the two cannot be confused).
pub fn encode_cursor(last_id: i64) -> String {
    last_id.to_string()
}

pub fn decode_cursor(cursor: Option<&str>) -> AppResult<i64> {
    // An empty cursor is the first page, as no cursor is.
    let Some(c) = cursor.filter(|c| !c.is_empty()) else { return Ok(0) };
    let decimal = || c.bytes().all(|b| b.is_ascii_digit()).then(|| c.parse::<i64>().ok()).flatten();
    let legacy = || {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok().and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse::<i64>().ok())
    };
    decimal().or_else(legacy).filter(|id| *id >= 0).ok_or_else(|| AppError::bad_request("invalid cursor", "cursor"))
}

pub fn page_limit(limit: Option<i64>) -> AppResult<i64> {
    match limit {
        None => Ok(20),
        Some(l) if l >= 1 => Ok(l.min(100)),
        Some(_) => Err(AppError::bad_request("limit must be between 1 and 100", "limit")),
    }
}

/// Turns `limit + 1` fetched rows into a page: the extra row only proves there is more.
pub fn paginate<T>(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(id(r)))
    } else {
        None
    };
    Page { items: rows, next_cursor }
}

#[utoipa::path(post, path = "/shops", tag = "catalog", request_body = CreateShop, security(("bearer" = [])),
    responses((status = 201, body = Shop), (status = 403, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create_shop(State(state): State<AppState>, user: AuthUser, Json(req): Json<CreateShop>) -> AppResult<(StatusCode, axum::Json<Shop>)> {
    user.require_seller()?;
    let shop: Shop = sqlx::query_as("INSERT INTO shops (owner_id, name) VALUES ($1, $2) RETURNING id, owner_id, name")
        .bind(user.id)
        .bind(&req.name.0)
        .fetch_one(&state.primary)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(shop)))
}

#[utoipa::path(get, path = "/shops", tag = "catalog", params(PageQuery), responses((status = 200, body = Page<Shop>)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_shops(State(state): State<AppState>, MaybeUser(user): MaybeUser, Query(q): Query<PageQuery>) -> AppResult<axum::Json<Page<Shop>>> {
    let after = decode_cursor(q.cursor.as_deref())?;
    let limit = page_limit(q.limit)?;
    let rows: Vec<Shop> = sqlx::query_as("SELECT id, owner_id, name FROM shops WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(limit + 1)
        .fetch_all(state.read_pool(user.map(|u| u.id)).await)
        .await?;
    Ok(axum::Json(paginate(rows, limit, |s| s.id)))
}

#[utoipa::path(post, path = "/products", tag = "catalog", request_body = CreateProduct, security(("bearer" = [])),
    responses((status = 201, body = Product), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(shop_id = req.shop_id))]
pub async fn create_product(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<CreateProduct>,
) -> AppResult<(StatusCode, axum::Json<Product>)> {
    user.require_seller()?;
    let owner: Option<(i64,)> = sqlx::query_as("SELECT owner_id FROM shops WHERE id = $1").bind(req.shop_id).fetch_optional(&state.primary).await?;
    match owner {
        None => return Err(AppError::unknown("shop", "shop_id")),
        Some((owner,)) if owner != user.id => {
            return Err(AppError::forbidden("not the owner of this shop"));
        }
        Some(_) => {}
    }
    let product: Product = sqlx::query_as(
        "INSERT INTO products (shop_id, name, description, price_cents, stock) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, shop_id, name, description, price_cents, stock",
    )
    .bind(req.shop_id)
    .bind(&req.name.0)
    .bind(req.description.map(|d| d.0).unwrap_or_default())
    .bind(req.price_cents.0)
    .bind(req.stock.0)
    .fetch_one(&state.primary)
    .await?;
    Ok((StatusCode::CREATED, axum::Json(product)))
}

#[utoipa::path(put, path = "/products/{id}", tag = "catalog", request_body = UpdateProduct, security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Product), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(product_id = id))]
pub async fn update_product(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
    Json(req): Json<UpdateProduct>,
) -> AppResult<axum::Json<Product>> {
    user.require_seller()?;
    let updated: Option<Product> = sqlx::query_as(
        "UPDATE products p SET
             name = COALESCE($3, p.name),
             description = COALESCE($4, p.description),
             price_cents = COALESCE($5, p.price_cents),
             stock = COALESCE($6, p.stock),
             updated_at = now()
         FROM shops s
         WHERE p.id = $1 AND s.id = p.shop_id AND s.owner_id = $2
         RETURNING p.id, p.shop_id, p.name, p.description, p.price_cents, p.stock",
    )
    .bind(id)
    .bind(user.id)
    .bind(req.name.map(|n| n.0))
    .bind(req.description.map(|d| d.0))
    .bind(req.price_cents.map(|c| c.0))
    .bind(req.stock.map(|s| s.0))
    .fetch_optional(&state.primary)
    .await?;
    let Some(product) = updated else {
        let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM products WHERE id = $1").bind(id).fetch_optional(&state.primary).await?;
        return Err(match exists {
            Some(_) => AppError::forbidden("not the owner of this product"),
            None => AppError::not_found("product"),
        });
    };
    invalidate_product(&state, id).await;
    Ok(axum::Json(product))
}

/// Drops a product from both caches. Other processes' in-process copies expire on
/// their own within the short local TTL.
pub async fn invalidate_product(state: &AppState, id: i64) {
    state.product_cache.remove(&id);
    if let Some(redis) = state.redis() {
        let key = redis.key(format_args!("product:{id}"));
        if let Err(e) = redis.call(|mut c| async move { c.del::<_, ()>(key).await }).await {
            tracing::warn!(error = %e, product_id = id, "could not invalidate cached product");
        }
    }
}

/// The product as the JSON body `GET /products/{id}` answers with. Caches hold the
/// serialized body, so a hit costs no clone of the product and no serialization.
async fn load_product(state: &AppState, id: i64, user_id: Option<i64>) -> AppResult<Bytes> {
    if let Some(body) = state.product_cache.get(&id) {
        state.metrics.incr_cache(true);
        return Ok(body);
    }
    if let Some(redis) = state.redis() {
        let key = redis.key(format_args!("product:{id}"));
        match redis.call(|mut c| async move { c.get::<_, Option<String>>(key).await }).await {
            // Parsed before it is trusted: what Redis holds may be from an older shop.
            Ok(Some(json)) if serde_json::from_str::<Product>(&json).is_ok() => {
                state.metrics.incr_cache(true);
                let body = Bytes::from(json);
                state.product_cache.put(id, body.clone());
                return Ok(body);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "redis product read failed"),
        }
    }
    state.metrics.incr_cache(false);
    let product: Product = sqlx::query_as("SELECT id, shop_id, name, description, price_cents, stock FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(state.read_pool(user_id).await)
        .await?
        .ok_or(AppError::not_found("product"))?;
    let json = serde_json::to_string(&product).map_err(|e| AppError::Internal(e.into()))?;
    if let Some(redis) = state.redis() {
        let key = redis.key(format_args!("product:{id}"));
        let value = json.clone();
        if let Err(e) = redis.call(|mut c| async move { c.set_ex::<_, _, ()>(key, value, REDIS_PRODUCT_TTL_SECS).await }).await {
            tracing::warn!(error = %e, "redis product write failed");
        }
    }
    let body = Bytes::from(json);
    state.product_cache.put(id, body.clone());
    Ok(body)
}

#[utoipa::path(get, path = "/products/{id}", tag = "catalog", params(("id" = i64, Path)),
    responses((status = 200, body = Product), (status = 404, body = ErrorBody)))]
// The hottest route: its span is debug-level (creating a span costs more than the
// cached read itself); its log lines still name the request (request_log.rs).
#[tracing::instrument(level = "debug", skip_all, fields(product_id = id))]
pub async fn get_product(State(state): State<AppState>, MaybeUser(user): MaybeUser, Path(id): Path<i64>) -> AppResult<Response> {
    let body = load_product(&state, id, user.map(|u| u.id)).await?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// Escapes LIKE wildcards so a search for `50%` means the literal text.
fn like_pattern(q: &str) -> String {
    let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

#[utoipa::path(get, path = "/products", tag = "catalog", params(ProductQuery),
    responses((status = 200, body = Page<Product>), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_products(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    ClientIp(client): ClientIp,
    Query(q): Query<ProductQuery>,
) -> AppResult<axum::Json<Page<Product>>> {
    if q.q.is_some() {
        ratelimit::check(&state, "search", &client, state.settings.rate_limits.search).await?;
    }
    let after = decode_cursor(q.cursor.as_deref())?;
    let limit = page_limit(q.limit)?;
    if q.q.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(AppError::bad_request("search text must be at most 200 characters", "q"));
    }
    let rows: Vec<Product> = sqlx::query_as(
        "SELECT id, shop_id, name, description, price_cents, stock FROM products
         WHERE id > $1
           AND ($2::bigint IS NULL OR shop_id = $2)
           AND ($3::text IS NULL OR name ILIKE $3)
           AND ($4::bigint IS NULL OR price_cents >= $4)
           AND ($5::bigint IS NULL OR price_cents <= $5)
         ORDER BY id LIMIT $6",
    )
    .bind(after)
    .bind(q.shop_id)
    .bind(q.q.as_deref().map(like_pattern))
    .bind(q.min_price)
    .bind(q.max_price)
    .bind(limit + 1)
    .fetch_all(state.read_pool(user.map(|u| u.id)).await)
    .await?;
    Ok(axum::Json(paginate(rows, limit, |p| p.id)))
}

#[utoipa::path(post, path = "/products/{id}/reviews", tag = "catalog", request_body = CreateReview,
    security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 201, body = Review), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(product_id = id))]
pub async fn create_review(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
    Json(req): Json<CreateReview>,
) -> AppResult<(StatusCode, axum::Json<Review>)> {
    let row: Option<(i64, bool)> = sqlx::query_as(
        "SELECT s.owner_id,
                EXISTS (SELECT 1 FROM order_items oi JOIN orders o ON o.id = oi.order_id
                        WHERE o.user_id = $2 AND oi.product_id = p.id)
         FROM products p JOIN shops s ON s.id = p.shop_id WHERE p.id = $1",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(&state.primary)
    .await?;
    let Some((owner, purchased)) = row else {
        return Err(AppError::not_found("product"));
    };
    if owner == user.id {
        return Err(AppError::forbidden("sellers cannot review their own products"));
    }
    if !purchased {
        return Err(AppError::forbidden("only buyers of this product can review it"));
    }
    let result = sqlx::query_as::<_, Review>(
        "INSERT INTO reviews (product_id, user_id, rating, body) VALUES ($1, $2, $3, $4)
         RETURNING id, product_id, user_id, rating, body, created_at",
    )
    .bind(id)
    .bind(user.id)
    .bind(req.rating.0)
    .bind(&req.body.0)
    .fetch_one(&state.primary)
    .await;
    match result {
        Ok(review) => Ok((StatusCode::CREATED, axum::Json(review))),
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict("already reviewed", Some("product_id"))),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/products/{id}/reviews", tag = "catalog", params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = Page<Review>), (status = 404, body = ErrorBody)))]
#[tracing::instrument(level = "debug", skip_all, fields(product_id = id))]
pub async fn list_reviews(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> AppResult<axum::Json<Page<Review>>> {
    let after = decode_cursor(q.cursor.as_deref())?;
    let limit = page_limit(q.limit)?;
    let pool = state.read_pool(user.map(|u| u.id)).await;
    let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM products WHERE id = $1").bind(id).fetch_optional(pool).await?;
    if exists.is_none() {
        return Err(AppError::not_found("product"));
    }
    let rows: Vec<Review> = sqlx::query_as(
        "SELECT id, product_id, user_id, rating, body, created_at FROM reviews
         WHERE product_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(axum::Json(paginate(rows, limit, |r| r.id)))
}
