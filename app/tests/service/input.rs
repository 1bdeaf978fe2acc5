use serde_json::json;

use crate::support::*;

/// Every malformed request gets a 4xx JSON error naming the field, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let (seller, shop_id, product) = app.seller_product(100, 5).await;
    let (_, buyer) = app.user("buyer").await;
    let snapshot = || async {
        (
            app.count("SELECT count(*) FROM cart_items").await,
            app.count("SELECT count(*) FROM products").await,
            app.count("SELECT (sum(stock) + sum(price_cents))::bigint FROM products").await,
            app.count("SELECT count(*) FROM orders").await,
        )
    };
    let before = snapshot().await;

    let raw = |path: &str, token: &str, body: &str| {
        app.client.post(format!("{}{path}", app.base)).bearer_auth(token).header("content-type", "application/json").body(body.to_owned()).send()
    };
    let check = |resp: reqwest::Response, status: u16, field: &'static str| async move {
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = resp.json().await.expect("error bodies are JSON");
        assert_eq!(body["field"], field, "{body}");
        assert!(body["error"].is_string());
    };

    check(raw("/cart/items", &buyer, "{\"product_id\": ").await.unwrap(), 400, "body").await;
    check(raw("/cart/items", &buyer, r#"{"product_id": 1, "quantity": "two"}"#).await.unwrap(), 422, "quantity").await;
    check(raw("/cart/items", &buyer, r#"{"product_id": "x", "quantity": 1}"#).await.unwrap(), 422, "product_id").await;
    check(raw("/cart/items", &buyer, &format!(r#"{{"product_id": {product}, "quantity": -3}}"#)).await.unwrap(), 422, "quantity").await;
    check(raw("/cart/items", &buyer, &format!(r#"{{"product_id": {product}, "quantity": 0}}"#)).await.unwrap(), 422, "quantity").await;
    check(raw("/cart/items", &buyer, r#"{"quantity": 1}"#).await.unwrap(), 422, "product_id").await;
    check(raw("/cart/items", &buyer, r#"{"product_id": 987654, "quantity": 1}"#).await.unwrap(), 404, "product_id").await;
    check(
        raw("/products", &seller, &format!(r#"{{"shop_id": {shop_id}, "name": "n", "price_cents": -1, "stock": 1}}"#)).await.unwrap(),
        422,
        "price_cents",
    )
    .await;
    check(raw("/products", &seller, &format!(r#"{{"shop_id": {shop_id}, "name": "", "price_cents": 1, "stock": 1}}"#)).await.unwrap(), 422, "name")
        .await;
    let wrong_method = raw(&format!("/products/{product}"), &seller, "{}").await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let put = app.put(&format!("/products/{product}"), Some(&seller), json!({"stock": -5})).await;
    assert_eq!((put.status.as_u16(), put.field()), (422, "stock"));
    let put = app.put(&format!("/products/{product}"), Some(&seller), json!({"colour": "red"})).await;
    assert_eq!(put.status, 422);

    let big = format!(r#"{{"product_id": 1, "quantity": 1, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let resp = raw("/cart/items", &buyer, &big).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());

    let no_ct = app.client.post(format!("{}/cart/items", app.base)).bearer_auth(&buyer).body("{}").send().await.unwrap();
    check(no_ct, 400, "Content-Type").await;

    // Valid JSON with a value of the wrong kind where a choice is expected names the
    // field and what it expects, like any other wrong type (serde calls it a syntax error).
    let roles = app.post("/register", None, json!({"email": "r@example.test", "password": "password1", "roles": ["seller"]})).await;
    assert_eq!((roles.status.as_u16(), roles.field()), (422, "roles"), "{:?}", roles.body);
    assert!(roles.error().starts_with("roles: ") && roles.error().contains("expected"), "{}", roles.error());

    // An integer written with a zero fraction is an integer (as JSON Schema counts it),
    // and an empty cursor is the first page.
    let as_float = raw("/cart/items", &buyer, &format!(r#"{{"product_id": {product}.0, "quantity": 2.0}}"#)).await.unwrap();
    assert_eq!(as_float.status(), 201);
    let item: serde_json::Value = as_float.json().await.unwrap();
    app.delete(&format!("/cart/items/{}", item["id"]), Some(&buyer)).await.expect(204);
    check(raw("/cart/items", &buyer, &format!(r#"{{"product_id": {product}, "quantity": 1.5}}"#)).await.unwrap(), 422, "quantity").await;
    app.get("/shops?cursor=", None).await.expect(200);

    let path = app.get("/products/abc", None).await;
    assert_eq!((path.status.as_u16(), path.field()), (400, "id"));
    let foreign = app.post("/cart/items", Some("forged-token"), json!({"product_id": product, "quantity": 1})).await;
    assert_eq!((foreign.status.as_u16(), foreign.field()), (401, "Authorization"));
    let anon = app.post("/cart/items", None, json!({"product_id": product, "quantity": 1})).await;
    assert_eq!(anon.status, 401);
    let unknown_route = app.get("/nope", None).await;
    assert_eq!(unknown_route.status, 404);
    assert!(unknown_route.body["error"].is_string());

    assert_eq!(snapshot().await, before, "no bad request changed data");
}
