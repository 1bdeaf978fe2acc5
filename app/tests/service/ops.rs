use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_openapi_and_request_ids() {
    let app = spawn_app().await;
    app.get("/healthz", None).await.expect(200);
    app.get("/readyz", None).await.expect(200);
    app.get("/products/1", None).await;
    app.get("/products/2", None).await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains(r#"shop_http_requests_total{route="/healthz",method="GET",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"shop_http_requests_total{route="/products/{id}",method="GET",status="404"} 2"#), "{text}");
    assert!(text.contains(r#"shop_http_request_duration_seconds_count{route="/products/{id}"} 2"#), "{text}");
    assert!(!text.contains("/products/1\""), "raw paths never become labels");
    assert!(text.contains("shop_db_pool_connections{pool=\"primary\",state=\"idle\"}"));
    assert!(text.contains("shop_cache_misses_total 2"));
    assert!(text.contains("shop_db_queries_total{pool=\"primary\"} 3"), "two product reads and the readiness probe: {text}");
    assert!(text.contains("shop_outbox_backlog 0"));

    let doc = app.get("/openapi.json", None).await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/checkout"]["post"].is_object());
    assert!(doc["paths"]["/flash-sales/{id}/purchase"]["post"].is_object());
    assert!(doc["components"]["schemas"]["Order"].is_object());
    // Every error the server can give is in the document: a generated client knows 401
    // wherever a token is needed, 400 wherever there is input, 413 and 422 with a body.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let codes: Vec<&str> = op["responses"].as_object().unwrap().keys().map(String::as_str).collect();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let body = op.get("requestBody").is_some();
            let input = body || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            for (needed, code) in [(secured, "401"), (input, "400"), (body, "413"), (body, "422")] {
                assert!(!needed || codes.contains(&code), "{method} {path} does not document {code}: {codes:?}");
            }
        }
    }

    let echoed = app.send_with(reqwest::Method::GET, "/healthz", None, None, &[("X-Request-Id", "trace-abc-123")]).await;
    assert_eq!(echoed.headers["x-request-id"], "trace-abc-123");
    let generated = app.get("/healthz", None).await;
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_the_database_is_unreachable() {
    // Reserve a port and close it: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut settings = shop::Settings::new(format!("postgres://postgres@127.0.0.1:{port}/nope"));
    settings.redis_url = None;
    let state = shop::AppState::connect(settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(shop::serve(listener, state, std::future::pending()));
    let started = std::time::Instant::now();
    let resp = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(reqwest::get(format!("http://{addr}/healthz")).await.unwrap().status(), 200);
    // A route that needs the database fails opaquely, with the request id.
    let resp = reqwest::get(format!("http://{addr}/products")).await.unwrap();
    assert_eq!(resp.status(), 500);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"error": "internal error", "request_id": rid}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_do_not_leak() {
    let app = spawn_app().await;
    let (_, _, product) = app.seller_product(1, 1).await;
    sqlx::query("DROP TABLE reviews").execute(&app.db).await.unwrap();
    let resp = app.get(&format!("/products/{product}/reviews"), None).await;
    assert_eq!(resp.status, 500);
    assert_eq!(resp.error(), "internal error");
    let text = resp.body.to_string();
    assert!(!text.contains("reviews") && !text.contains("relation"), "{text}");
    assert_eq!(resp.body["request_id"], resp.headers["x-request-id"].to_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_neither_blocks_start_nor_breaks_requests() {
    let db = fresh_database().await;
    let mut settings = shop::Settings::new(db);
    settings.redis_url = Some("redis://127.0.0.1:1/".to_owned());
    let started = std::time::Instant::now();
    let state = shop::AppState::connect(settings).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(state.redis().is_none());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(shop::serve(listener, state, std::future::pending()));
    let resp = reqwest::get(format!("http://{addr}/products?q=x")).await.unwrap();
    assert_eq!(resp.status(), 200, "search (rate-limited via the local bucket) still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_is_asked_once_per_cool_down_not_once_per_request() {
    let proxy = RedisProxy::start().await;
    let app = spawn_app_with(Options { redis_url: Some(proxy.url.clone()), ..Options::default() }).await;
    let (token, shop_id, first) = app.seller_product(100, 5).await;
    let mut products = vec![first];
    for i in 0..9 {
        let body = json!({"shop_id": shop_id, "name": format!("p{i}"), "description": "d", "price_cents": 100, "stock": 5});
        products.push(app.post("/products", Some(&token), body).await.expect(201)["id"].as_i64().unwrap());
    }
    assert_eq!(metric(&app, "shop_redis_up").await, 1);

    proxy.freeze();
    let started = std::time::Instant::now();
    for id in &products {
        // Never read before, so each is a miss that would ask Redis first.
        app.get(&format!("/products/{id}"), None).await.expect(200);
    }
    let cool_downs = started.elapsed().as_secs() as usize;
    let asked = proxy.swallowed("GET");
    assert!(asked >= 1, "the first miss asks Redis");
    assert!(asked <= 1 + cool_downs, "Redis was asked {asked} times for {} reads in {:?}", products.len(), started.elapsed());
    assert_eq!(metric(&app, "shop_redis_up").await, 0);
}
