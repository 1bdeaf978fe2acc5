use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_checkout_orders_invoice_delivery_and_returns() {
    let app = spawn_app().await;
    let (_, _, p1) = app.seller_product(250, 10).await;
    let (_, _, p2) = app.seller_product(1_000, 3).await;
    let (buyer_id, buyer) = app.user("buyer").await;

    let first = app.post("/cart/items", Some(&buyer), json!({"product_id": p1, "quantity": 2})).await.expect(201);
    let again = app.post("/cart/items", Some(&buyer), json!({"product_id": p1, "quantity": 1})).await.expect(201);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["quantity"], 3, "adding the same product increments");
    app.add_to_cart(&buyer, p2, 1).await;
    let extra = app.post("/cart/items", Some(&buyer), json!({"product_id": p2, "quantity": 1})).await.expect(201);
    let cart = app.get("/cart", Some(&buyer)).await.expect(200);
    assert_eq!(cart["items"].as_array().unwrap().len(), 2);
    assert_eq!(cart["total_cents"], 3 * 250 + 2 * 1_000);
    // Removing a line; someone else cannot remove ours.
    let (_, stranger) = app.user("buyer").await;
    assert_eq!(app.delete(&format!("/cart/items/{}", extra["id"]), Some(&stranger)).await.status, 404);
    assert_eq!(app.delete(&format!("/cart/items/{}", extra["id"]), Some(&buyer)).await.status, 204);
    app.add_to_cart(&buyer, p2, 1).await;

    let missing_key = app.send(reqwest::Method::POST, "/checkout", Some(&buyer), None).await;
    assert_eq!(missing_key.status, 400);
    assert_eq!(missing_key.field(), "Idempotency-Key");

    let order_key = key();
    let order = app.checkout(&buyer, &order_key).await.expect(201);
    let order_id = order["id"].as_i64().unwrap();
    assert_eq!(order["total_cents"], 3 * 250 + 1_000);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.stock(p1).await, 7);
    assert_eq!(app.stock(p2).await, 2);
    assert_eq!(app.get("/cart", Some(&buyer)).await.expect(200)["items"].as_array().unwrap().len(), 0);
    assert_eq!(app.count(&format!("SELECT count(*) FROM payments WHERE order_id = {order_id} AND amount_cents = 1750")).await, 1);
    assert_eq!(app.count(&format!("SELECT count(*) FROM outbox WHERE payload->>'order_id' = '{order_id}'")).await, 1);

    let empty = app.checkout(&buyer, &key()).await;
    assert_eq!(empty.status, 409, "a valid request the cart's state refuses");
    assert_eq!(empty.field(), "cart");

    let list = app.get("/orders", Some(&buyer)).await.expect(200);
    assert_eq!(list["items"][0]["id"], order_id);
    let fetched = app.get(&format!("/orders/{order_id}"), Some(&buyer)).await.expect(200);
    assert_eq!(fetched["user_id"], buyer_id);
    assert_eq!(fetched, order, "GET /orders/{{id}} is the order checkout answered");
    let invoice = app.get(&format!("/orders/{order_id}/invoice"), Some(&buyer)).await.expect(200);
    assert_eq!(invoice["amount_cents"], 1_750);
    let delivery = app.get(&format!("/orders/{order_id}/delivery"), Some(&buyer)).await.expect(200);
    assert_eq!(delivery["status"], "scheduled");
    for path in ["", "/invoice", "/delivery"] {
        assert_eq!(app.get(&format!("/orders/{order_id}{path}"), Some(&stranger)).await.status, 404, "foreign order{path}");
    }
    assert_eq!(app.get(&format!("/orders/{order_id}"), None).await.status, 401);

    let item = fetched["items"].as_array().unwrap().iter().find(|i| i["product_id"] == p1).unwrap().clone();
    let ret = json!({"order_id": order_id, "order_item_id": item["id"], "quantity": 2});
    assert_eq!(app.post("/returns", Some(&stranger), ret.clone()).await.status, 404);
    let too_many = app.post("/returns", Some(&buyer), json!({"order_id": order_id, "order_item_id": item["id"], "quantity": 4})).await;
    assert_eq!((too_many.status.as_u16(), too_many.field()), (422, "quantity"));
    let refund = app.post("/returns", Some(&buyer), ret.clone()).await.expect(201);
    assert_eq!(refund["amount_cents"], 500);
    assert_eq!(app.stock(p1).await, 9, "returned units are restocked");
    assert_eq!(app.post("/returns", Some(&buyer), ret).await.status, 409, "one return per item");
    assert_eq!(app.stock(p1).await, 9);
    assert_eq!(app.count("SELECT count(*) FROM refunds").await, 1);
    // A replay reads the order back; a return does not change what it answers.
    let replay = app.checkout(&buyer, &order_key).await.expect(200);
    assert_eq!(replay, order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_and_key_reuse() {
    let app = spawn_app().await;
    let (_, _, product) = app.seller_product(100, 10).await;
    let (_, buyer) = app.user("buyer").await;
    app.add_to_cart(&buyer, product, 2).await;
    let k = key();
    let first = app.checkout(&buyer, &k).await.expect(201);
    let replay = app.checkout(&buyer, &k).await.expect(200);
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(replay, first, "a replay returns the order the key placed");
    assert_eq!(app.stock(product).await, 8, "stock taken once");

    app.add_to_cart(&buyer, product, 1).await;
    let reused = app.checkout(&buyer, &k).await;
    assert_eq!(reused.status, 409);
    assert_eq!(reused.field(), "Idempotency-Key");
    assert_eq!(app.stock(product).await, 8);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    // The same key of another user is a different key.
    let (_, other) = app.user("buyer").await;
    app.add_to_cart(&other, product, 1).await;
    app.checkout(&other, &k).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let (_, _, product) = app.seller_product(100, 50).await;
    let (_, buyer) = app.user("buyer").await;
    app.add_to_cart(&buyer, product, 3).await;
    let k = key();
    let results = futures::future::join_all((0..8).map(|_| app.checkout(&buyer, &k))).await;
    let ids: Vec<i64> = results
        .iter()
        .map(|r| {
            assert!(r.status == 201 || r.status == 200, "status {} body {}", r.status, r.body);
            r.body["id"].as_i64().unwrap()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "all got the same order: {ids:?}");
    assert_eq!(results.iter().filter(|r| r.status == 201).count(), 1);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM payments").await, 1);
    assert_eq!(app.stock(product).await, 47);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buyers_race_for_the_last_unit() {
    let app = spawn_app().await;
    let (_, _, product) = app.seller_product(100, 1).await;
    let (_, a) = app.user("buyer").await;
    let (_, b) = app.user("buyer").await;
    app.add_to_cart(&a, product, 1).await;
    app.add_to_cart(&b, product, 1).await;
    let (ka, kb) = (key(), key());
    let (ra, rb) = tokio::join!(app.checkout(&a, &ka), app.checkout(&b, &kb));
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let loser = if ra.status == 409 { &ra } else { &rb };
    assert_eq!(loser.error(), "insufficient stock");
    assert_eq!(loser.field(), "product_id");
    assert_eq!(loser.body["product_id"], product);
    assert_eq!(app.stock(product).await, 0);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    // The loser's cart is untouched, and so is everything else.
    assert_eq!(app.count("SELECT count(*) FROM cart_items").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 1);
}

/// Carts that share products lock them in one order (by id), so buyers racing for the
/// same set of products neither oversell any of them nor leave a buyer without an
/// answer, and a refused buyer is told which product ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_of_overlapping_carts_never_oversell() {
    let app = spawn_app().await;
    let mut products = Vec::new();
    for _ in 0..3 {
        products.push(app.seller_product(100, 4).await.2);
    }
    let mut buyers = Vec::new();
    for b in 0..12 {
        let (_, token) = app.user("buyer").await;
        // Each buyer fills the cart in a different order.
        for i in 0..3 {
            app.add_to_cart(&token, products[(b + i) % 3], 1).await;
        }
        buyers.push((token, key()));
    }
    let results = futures::future::join_all(buyers.iter().map(|(b, k)| app.checkout(b, k))).await;
    let won = results.iter().filter(|r| r.status == 201).count();
    assert_eq!(won, 4, "4 units of each product make 4 whole carts");
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.error(), "insufficient stock");
        assert!(products.contains(&r.body["product_id"].as_i64().unwrap()));
    }
    for p in &products {
        assert_eq!(app.stock(*p).await, 0);
    }
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 4);
    assert_eq!(app.count("SELECT sum(quantity) FROM order_items").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_works_without_redis() {
    let app = spawn_app_with(Options { redis: false, ..Default::default() }).await;
    assert!(app.state.redis().is_none());
    app.post("/register", None, json!({"email": "s@example.test", "password": "password1", "roles": "seller"})).await.expect(201);
    app.post("/register", None, json!({"email": "b@example.test", "password": "password1", "roles": "buyer"})).await.expect(201);
    let seller = app.post("/login", None, json!({"email": "s@example.test", "password": "password1"})).await.expect(200);
    let seller = seller["token"].as_str().unwrap().to_owned();
    let buyer = app.post("/login", None, json!({"email": "b@example.test", "password": "password1"})).await.expect(200);
    let buyer = buyer["token"].as_str().unwrap().to_owned();
    let shop = app.post("/shops", Some(&seller), json!({"name": "S"})).await.expect(201);
    let product = app.post("/products", Some(&seller), json!({"shop_id": shop["id"], "name": "P", "price_cents": 99, "stock": 2})).await.expect(201);
    let pid = product["id"].as_i64().unwrap();
    app.get(&format!("/products/{pid}"), None).await.expect(200);
    app.add_to_cart(&buyer, pid, 2).await;
    let k = key();
    let order = app.checkout(&buyer, &k).await.expect(201);
    assert_eq!(app.checkout(&buyer, &k).await.expect(200)["id"], order["id"]);
    assert_eq!(app.stock(pid).await, 0);
    assert_eq!(app.get(&format!("/products/{pid}"), None).await.expect(200)["stock"], 0, "checkout invalidates the cache");
    app.add_to_cart(&buyer, pid, 1).await;
    assert_eq!(app.checkout(&buyer, &key()).await.status, 409);
    app.get(&format!("/orders/{}/invoice", order["id"]), Some(&buyer)).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_switch_ignores_the_idempotency_key() {
    let app = spawn_app_with(Options { unsafe_non_idempotent_checkout: true, ..Default::default() }).await;
    let (_, _, product) = app.seller_product(100, 10).await;
    let (_, buyer) = app.user("buyer").await;
    let k = key();
    app.add_to_cart(&buyer, product, 1).await;
    app.checkout(&buyer, &k).await.expect(201);
    app.add_to_cart(&buyer, product, 1).await;
    app.checkout(&buyer, &k).await.expect(201);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 2, "the test-only switch really disables idempotency");
}
