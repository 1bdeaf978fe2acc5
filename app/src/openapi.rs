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
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The error answers every route shares, documented where they can happen so that the
/// document says what the server does: 400 for a malformed parameter or body, 413 for a
/// body over the limit, 422 for a body that does not validate, 401 where a token is
/// required, 429 where a rate limit applies. Each is an `ErrorBody` naming the field.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [(&mut item.get, "GET"), (&mut item.put, "PUT"), (&mut item.post, "POST"), (&mut item.delete, "DELETE")];
            for (op, method) in operations {
                let Some(op) = op.as_mut() else { continue };
                let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
                let has_body = op.request_body.is_some();
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                // A code the route documents itself keeps its own description.
                let mut add = |code: &str, description: &str| {
                    op.responses.responses.entry(code.to_owned()).or_insert_with(|| error(description).into());
                };
                if takes_input {
                    add("400", "A parameter, header or body that cannot be read, naming it");
                }
                if has_body {
                    add("413", "A body over 64 KiB");
                    add("422", "A body that does not validate, naming the field");
                }
                if secured {
                    add("401", "A missing, invalid or expired bearer token");
                }
                if matches!((method, path.as_str()), ("POST", "/login") | ("POST", "/register") | ("GET", "/products")) {
                    add("429", "Too many requests from this client; see Retry-After");
                }
            }
        }
    }
}
