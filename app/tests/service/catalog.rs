use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_and_products_enforce_roles_and_ownership() {
    let app = spawn_app().await;
    let (_, buyer) = app.user("buyer").await;
    let denied = app.post("/shops", Some(&buyer), json!({"name": "Nope"})).await;
    assert_eq!(denied.status, 403);
    assert_eq!(app.post("/shops", None, json!({"name": "Nope"})).await.status, 401);

    let (seller, shop_id, product_id) = app.seller_product(1_000, 5).await;
    let shops = app.get("/shops", None).await.expect(200);
    assert_eq!(shops["items"].as_array().unwrap().len(), 1);
    assert_eq!(shops["items"][0]["id"], shop_id);

    let (_, other_seller) = app.user("seller").await;
    let foreign = app.post("/products", Some(&other_seller), json!({"shop_id": shop_id, "name": "X", "price_cents": 1, "stock": 1})).await;
    assert_eq!(foreign.status, 403);
    let foreign_update = app.put(&format!("/products/{product_id}"), Some(&other_seller), json!({"price_cents": 1})).await;
    assert_eq!(foreign_update.status, 403);
    let unknown_shop = app.post("/products", Some(&seller), json!({"shop_id": 999_999, "name": "X", "price_cents": 1, "stock": 1})).await;
    assert_eq!(unknown_shop.status, 404);
    assert_eq!(unknown_shop.field(), "shop_id");
    assert_eq!(app.put("/products/999999", Some(&seller), json!({"stock": 1})).await.status, 404);

    // Read (fills Redis and the local cache), update, read again: the update shows.
    let before = app.get(&format!("/products/{product_id}"), None).await.expect(200);
    assert_eq!(before["price_cents"], 1_000);
    let updated = app.put(&format!("/products/{product_id}"), Some(&seller), json!({"price_cents": 750})).await.expect(200);
    assert_eq!(updated["price_cents"], 750);
    assert_eq!(updated["name"], "Widget", "a partial update keeps other fields");
    assert_eq!(updated["stock"], 5);
    let after = app.get(&format!("/products/{product_id}"), None).await.expect(200);
    assert_eq!(after["price_cents"], 750);
    assert_eq!(app.get("/products/424242", None).await.status, 404);
    assert_eq!(app.count("SELECT count(*) FROM products").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_search_filters_and_keyset_pagination() {
    let app = spawn_app().await;
    let (seller, shop_id, _) = app.seller_product(100, 1).await;
    for (name, price) in [("Red apple", 200), ("Green apple", 300), ("Pear", 400), ("100% apple juice", 500)] {
        app.post("/products", Some(&seller), json!({"shop_id": shop_id, "name": name, "price_cents": price, "stock": 3})).await.expect(201);
    }
    let apples = app.get("/products?q=APPLE", None).await.expect(200);
    assert_eq!(apples["items"].as_array().unwrap().len(), 3);
    let literal = app.get("/products?q=100%25", None).await.expect(200);
    assert_eq!(literal["items"].as_array().unwrap().len(), 1, "% is literal, not a wildcard");
    let mid = app.get("/products?min_price=250&max_price=450", None).await.expect(200);
    let names: Vec<&str> = mid["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Green apple", "Pear"]);
    assert_eq!(app.get(&format!("/products?shop_id={shop_id}"), None).await.expect(200)["items"].as_array().unwrap().len(), 5);
    assert_eq!(app.get("/products?shop_id=777", None).await.expect(200)["items"].as_array().unwrap().len(), 0);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/products?limit=2&cursor={c}"),
            None => "/products?limit=2".to_owned(),
        };
        let page = app.get(&path, None).await.expect(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are in id order without repeats");
    assert_eq!(seen.len(), 5);

    let bad = app.get("/products?cursor=@@@", None).await;
    assert_eq!((bad.status.as_u16(), bad.field()), (400, "cursor"));
    let bad = app.get("/products?limit=0", None).await;
    assert_eq!((bad.status.as_u16(), bad.field()), (400, "limit"));
    let bad = app.get("/products?limit=abc", None).await;
    assert_eq!((bad.status.as_u16(), bad.field()), (400, "limit"));
    let capped = app.get("/products?limit=1000", None).await.expect(200);
    assert_eq!(capped["items"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_need_a_verified_purchase() {
    let app = spawn_app().await;
    let (seller, _, product) = app.seller_product(100, 10).await;
    let (_, buyer) = app.user("buyer").await;
    let path = format!("/products/{product}/reviews");
    let review = json!({"rating": 5, "body": "great"});
    assert_eq!(app.post(&path, Some(&buyer), review.clone()).await.status, 403, "no purchase yet");
    assert_eq!(app.post(&path, Some(&seller), review.clone()).await.status, 403, "own product");

    app.post("/cart/items", Some(&buyer), json!({"product_id": product, "quantity": 1})).await.expect(201);
    app.checkout(&buyer, &key()).await.expect(201);
    let bad = app.post(&path, Some(&buyer), json!({"rating": 6, "body": "too good"})).await;
    assert_eq!((bad.status.as_u16(), bad.field()), (422, "rating"));
    let created = app.post(&path, Some(&buyer), review.clone()).await.expect(201);
    assert_eq!(created["rating"], 5);
    assert_eq!(app.post(&path, Some(&buyer), review).await.status, 409, "one review per user and product");
    let list = app.get(&path, None).await.expect(200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/products/99999/reviews", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_the_replica_except_right_after_own_writes() {
    // The "replica" is a second database with the same schema but none of the data,
    // so where a read went is visible in its answer.
    let replica = fresh_database().await;
    let app = spawn_app_with(Options { redis: false, read_database_url: Some(replica), ..Default::default() }).await;
    let (seller, _, product) = app.seller_product(100, 1).await;
    // The seller just wrote: their reads see the primary.
    assert_eq!(app.get("/products?limit=5", Some(&seller)).await.expect(200)["items"].as_array().unwrap().len(), 1);
    // Anonymous catalog reads go to the (empty) replica.
    assert_eq!(app.get("/products", None).await.expect(200)["items"].as_array().unwrap().len(), 0);
    assert_eq!(app.get("/shops", None).await.expect(200)["items"].as_array().unwrap().len(), 0);
    // ... which /metrics counts per pool: the two anonymous reads went to the replica.
    let metrics = app.get("/metrics", None).await.expect(200);
    assert!(metrics.as_str().unwrap().contains("shop_db_queries_total{pool=\"replica\"} 2"), "{metrics}");
    // Right after their checkout, a buyer reads their own order from the primary.
    let (_, buyer) = app.user("buyer").await;
    app.post("/cart/items", Some(&buyer), json!({"product_id": product, "quantity": 1})).await.expect(201);
    let order = app.checkout(&buyer, &key()).await.expect(201);
    app.get(&format!("/orders/{}", order["id"]), Some(&buyer)).await.expect(200);
    assert_eq!(app.get("/orders", Some(&buyer)).await.expect(200)["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_select_route_groups() {
    let db = fresh_database().await;
    let roles: shop::Roles = "auth".parse().unwrap();
    let app = spawn_on(db, Options { roles, ..Default::default() }).await;
    let missing = app.get("/products", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error(), "route not found");
    assert_eq!(app.post("/checkout", None, json!({})).await.status, 404);
    app.get("/healthz", None).await.expect(200);
    app.post("/register", None, json!({"email": "r@example.test", "password": "password1", "roles": "both"})).await.expect(201);
}
