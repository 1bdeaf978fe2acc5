use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_me_and_token_rules() {
    // Sessions are edited in the database below, behind the shop's back: only the
    // instance's own short cache may hide that, not Redis's copy from the login.
    let app = spawn_app_with(Options { session_share: Duration::ZERO, ..Default::default() }).await;
    let user = app.post("/register", None, json!({"email": "Ann@Example.test", "password": "correct horse", "roles": "buyer"})).await.expect(201);
    assert_eq!(user["email"], "ann@example.test");
    assert_eq!(user["roles"], "buyer");

    let dup = app.post("/register", None, json!({"email": "ann@example.TEST", "password": "whatever1", "roles": "seller"})).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.field(), "email");

    let bad_role = app.post("/register", None, json!({"email": "b@example.test", "password": "whatever1", "roles": "admin"})).await;
    assert_eq!(bad_role.status, 422);
    assert_eq!(bad_role.field(), "roles");

    let wrong = app.post("/login", None, json!({"email": "ann@example.test", "password": "wrong password"})).await;
    assert_eq!(wrong.status, 401);
    let unknown = app.post("/login", None, json!({"email": "nobody@example.test", "password": "wrong password"})).await;
    assert_eq!(unknown.status, 401);

    let login = app.post("/login", None, json!({"email": "ann@example.test", "password": "correct horse"})).await.expect(200);
    let token = login["token"].as_str().unwrap().to_owned();
    let expires = time::OffsetDateTime::parse(login["expires_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    assert!(expires > time::OffsetDateTime::now_utc());

    let me = app.get("/me", Some(&token)).await.expect(200);
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["roles"], "buyer");

    // The token is stored hashed, never in clear.
    let clear = app.count(&format!("SELECT count(*) FROM sessions WHERE encode(token_hash, 'escape') = '{token}'")).await;
    assert_eq!(clear, 0);

    let missing = app.get("/me", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.field(), "Authorization");
    assert_eq!(app.get("/me", Some("not-a-token")).await.status, 401);

    // A session about to expire is refused once it has, although the shop trusts it
    // from its session cache until then (the cache lives longer than this).
    let login = app.post("/login", None, json!({"email": "ann@example.test", "password": "correct horse"})).await.expect(200);
    let short = login["token"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE sessions SET expires_at = now() + interval '1 second' WHERE token_hash = $1")
        .bind(&shop::extract::hash_token(&short)[..])
        .execute(&app.db)
        .await
        .unwrap();
    app.get("/me", Some(&short)).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.get("/me", Some(&short)).await.status, 401, "expired token must be refused");
    app.get("/me", Some(&token)).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_works_only_as_long_as_the_session_cache_trusts_it() {
    for cache in [Duration::ZERO, Duration::from_secs(1)] {
        // This instance's own trust window; Redis's is tested below.
        let app = spawn_app_with(Options { session_cache: cache, session_share: Duration::ZERO, ..Default::default() }).await;
        let (_, token) = app.user("buyer").await;
        app.get("/me", Some(&token)).await.expect(200);
        sqlx::query("DELETE FROM sessions").execute(&app.db).await.unwrap();
        let right_after = app.get("/me", Some(&token)).await.status;
        if cache.is_zero() {
            assert_eq!(right_after, 401, "without a cache the database decides at once");
        } else {
            // Trusted from the cache: this request did not ask the database.
            assert_eq!(right_after, 200);
            tokio::time::sleep(cache + Duration::from_millis(100)).await;
            assert_eq!(app.get("/me", Some(&token)).await.status, 401);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_one_instance_saw_reaches_another_from_redis_without_the_database() {
    let db = fresh_database().await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let opts = || Options { redis_prefix: Some(prefix.clone()), ..Default::default() };
    let (a, b) = (spawn_on(db.clone(), opts()).await, spawn_on(db, opts()).await);
    // A token made behind the shops' backs: the first lookup asks the database and
    // shares the session in Redis.
    let (id, token) = a.user("buyer").await;
    a.get("/me", Some(&token)).await.expect(200);
    let before = b.state.primary.statements();
    let me = b.get("/me", Some(&token)).await.expect(200);
    assert_eq!(me["id"], id);
    assert_eq!(me["roles"], "buyer");
    assert_eq!(b.state.primary.statements(), before, "a token this instance never saw was answered from Redis");
    // A login shares its session at once.
    let email = format!("{}@example.test", key());
    a.post("/register", None, json!({"email": email, "password": "correct horse", "roles": "both"})).await.expect(201);
    let login = a.post("/login", None, json!({"email": email, "password": "correct horse"})).await.expect(200);
    let fresh = login["token"].as_str().unwrap();
    let before = b.state.primary.statements();
    assert_eq!(b.get("/me", Some(fresh)).await.expect(200)["roles"], "both");
    assert_eq!(b.state.primary.statements(), before);
    // Without sharing, the other instance asks the database.
    let c = spawn_on(fresh_database().await, Options { session_share: Duration::ZERO, ..Default::default() }).await;
    let (_, token) = c.user("buyer").await;
    let before = c.state.primary.statements();
    c.get("/me", Some(&token)).await.expect(200);
    assert!(c.state.primary.statements() > before);
    // An unknown token is refused, and nothing about it is kept.
    assert_eq!(b.get("/me", Some("no-such-token")).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rate_limit_with_and_without_redis() {
    for redis in [true, false] {
        let limits = shop::RateLimits { login: "1:2".parse().unwrap(), ..Default::default() };
        let app = spawn_app_with(Options { redis, rate_limits: limits, ..Default::default() }).await;
        let body = json!({"email": "nobody@example.test", "password": "irrelevant"});
        assert_eq!(app.post("/login", None, body.clone()).await.status, 401);
        assert_eq!(app.post("/login", None, body.clone()).await.status, 401);
        let limited = app.post("/login", None, body.clone()).await;
        assert_eq!(limited.status, 429, "redis={redis}");
        let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1);
        // Another client (per X-Forwarded-For) has its own bucket.
        let other = app.send_with(reqwest::Method::POST, "/login", None, Some(body.clone()), &[("X-Forwarded-For", "10.9.9.9")]).await;
        assert_eq!(other.status, 401, "redis={redis}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_search_are_rate_limited() {
    let limits = shop::RateLimits { register: "1:1".parse().unwrap(), search: "1:1".parse().unwrap(), ..Default::default() };
    let app = spawn_app_with(Options { redis: true, rate_limits: limits, ..Default::default() }).await;
    let reg = |n: u32| json!({"email": format!("u{n}@example.test"), "password": "password1", "roles": "buyer"});
    app.post("/register", None, reg(1)).await.expect(201);
    assert_eq!(app.post("/register", None, reg(2)).await.status, 429);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1, "a limited request changes nothing");
    app.get("/products?q=x", None).await.expect(200);
    assert_eq!(app.get("/products?q=x", None).await.status, 429);
    // Browsing without a search term is not limited.
    app.get("/products", None).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_at_once_here_and_within_the_cache_window_elsewhere() {
    let db = fresh_database().await;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let cache = Duration::from_secs(1);
    let opts = || Options { redis_prefix: Some(prefix.clone()), session_cache: cache, ..Default::default() };
    let (a, b, c) = (spawn_on(db.clone(), opts()).await, spawn_on(db.clone(), opts()).await, spawn_on(db, opts()).await);
    let email = format!("{}@example.test", key());
    a.post("/register", None, json!({"email": email, "password": "correct horse", "roles": "buyer"})).await.expect(201);
    let token = a.post("/login", None, json!({"email": email, "password": "correct horse"})).await.expect(200)["token"].as_str().unwrap().to_owned();
    let other = a.post("/login", None, json!({"email": email, "password": "correct horse"})).await.expect(200)["token"].as_str().unwrap().to_owned();
    // b has looked the session up and caches it; c has never seen it.
    b.get("/me", Some(&token)).await.expect(200);

    assert_eq!(a.post("/logout", Some(&token), json!({})).await.status, 204);
    assert_eq!(a.get("/me", Some(&token)).await.status, 401, "refused at once where it ended");
    assert_eq!(c.get("/me", Some(&token)).await.status, 401, "and by an instance that had not cached it (Redis's copy is gone)");
    assert_eq!(b.get("/me", Some(&token)).await.status, 200, "an instance that cached it trusts it for its cache window");
    tokio::time::sleep(cache + Duration::from_millis(200)).await;
    assert_eq!(b.get("/me", Some(&token)).await.status, 401, "and no longer");
    assert_eq!(a.post("/logout", Some(&token), json!({})).await.status, 401, "an ended session cannot end again");
    a.get("/me", Some(&other)).await.expect(200);
    assert_eq!(a.post("/logout", None, json!({})).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_make_that_client_wait_without_locking_the_owner_out() {
    for redis in [true, false] {
        let app = spawn_app_with(Options { redis, ..Default::default() }).await;
        let email = format!("{}@example.test", key());
        app.post("/register", None, json!({"email": email, "password": "correct horse", "roles": "buyer"})).await.expect(201);
        let attempt = |password: &str, client: &str| {
            let body = json!({"email": email, "password": password});
            let client = client.to_owned();
            let app = &app;
            async move { app.send_with(reqwest::Method::POST, "/login", None, Some(body), &[("X-Forwarded-For", &client)]).await }
        };
        for _ in 0..shop::failures::FREE_FAILURES {
            assert_eq!(attempt("wrong password", "10.1.1.1").await.status, 401, "redis={redis}");
        }
        let waiting = attempt("correct horse", "10.1.1.1").await;
        assert_eq!(waiting.status, 429, "the guessing client waits, even with the right password (redis={redis})");
        assert_eq!(waiting.headers["retry-after"].to_str().unwrap(), "1");
        assert_eq!(attempt("correct horse", "10.2.2.2").await.status, 200, "the owner elsewhere logs in (redis={redis})");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(attempt("correct horse", "10.1.1.1").await.status, 200, "after the wait (redis={redis})");

        // Many clients guessing one account: it then takes one attempt a second.
        let victim = format!("{}@example.test", key());
        app.post("/register", None, json!({"email": victim, "password": "correct horse", "roles": "buyer"})).await.expect(201);
        for i in 0..shop::failures::ACCOUNT_ALARM {
            let body = json!({"email": victim, "password": "wrong password"});
            let r = app.send_with(reqwest::Method::POST, "/login", None, Some(body), &[("X-Forwarded-For", &format!("10.3.0.{i}"))]).await;
            assert_eq!(r.status, 401);
        }
        let owner = |client: &'static str| {
            let body = json!({"email": victim, "password": "correct horse"});
            let app = &app;
            async move { app.send_with(reqwest::Method::POST, "/login", None, Some(body), &[("X-Forwarded-For", client)]).await.status }
        };
        assert_eq!(owner("10.4.0.1").await, 200, "one attempt a second gets through (redis={redis})");
        assert_eq!(owner("10.4.0.2").await, 429, "the next within the second waits (redis={redis})");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(owner("10.4.0.2").await, 200, "a slowdown, not a lockout (redis={redis})");
    }
}
