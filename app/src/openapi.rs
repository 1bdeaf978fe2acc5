//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes
//! and the request/response types' `ToSchema` derives.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::{auth, cart, catalog, checkout, flash, http, orders};

#[derive(OpenApi)]
#[openapi(
    info(title = "shop", description = "The e-commerce service deployed by scalectl"),
    paths(
        http::healthz, http::readyz, http::metrics,
        auth::register, auth::login, auth::logout, auth::me,
        catalog::create_shop, catalog::list_shops, catalog::create_product, catalog::update_product,
        catalog::get_product, catalog::list_products, catalog::create_review, catalog::list_reviews,
        cart::add_item, cart::get_cart, cart::remove_item,
        checkout::checkout,
        orders::list_orders, orders::get_order, orders::get_invoice, orders::get_delivery, orders::create_return,
        flash::create_sale, flash::get_sale, flash::purchase,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}
