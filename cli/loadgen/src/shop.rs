//! The shop's API as setup needs it: buyers (log in, or register and then log in), a
//! seller with a shop and a catalog. Everything is named from the seed, so a second run
//! with the same seed finds the same users; their tokens are kept in a cache file and
//! reused while the shop still accepts them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Error;
use crate::http::{Conn, Reply, Request, Target, bearer};

/// Words product names are made of; search queries pick one.
pub const WORDS: [&str; 12] = ["red", "blue", "green", "steel", "wooden", "small", "large", "smart", "classic", "travel", "kitchen", "garden"];

/// Cached tokens older than this are not trusted (the shop's default lifetime is 24 h).
const CACHE_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// What a scenario needs to exist before it runs.
#[derive(Debug, Clone)]
pub struct SetupConfig {
    pub seed: u64,
    pub buyers: usize,
    pub products: usize,
    /// Setup requests in flight at once. Registration and login hash passwords on a pool
    /// the size of the shop's cores, so more than a few per core only queues.
    pub concurrency: usize,
    /// Where tokens and ids are kept between runs.
    pub cache: Option<PathBuf>,
    pub progress: bool,
}

/// A buyer as requests need it.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub email: String,
    /// `Bearer …`.
    pub auth: HeaderValue,
    /// This buyer's simulated client address (`X-Forwarded-For`).
    pub client: HeaderValue,
}

/// Users, shop and catalog, ready for a run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub seed: u64,
    pub password: String,
    pub seller: HeaderValue,
    pub seller_client: HeaderValue,
    pub shop_id: i64,
    pub products: Vec<i64>,
    pub buyers: Vec<Buyer>,
    pub stats: SetupStats,
}

/// How setup went, reported apart from the measured run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupStats {
    pub seconds: f64,
    /// Buyers whose cached token was reused.
    pub reused: usize,
    /// Buyers that logged in (they existed already).
    pub logged_in: usize,
    /// Buyers registered now.
    pub registered: usize,
    pub products_created: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    url: String,
    seed: u64,
    created_unix: u64,
    seller: Option<String>,
    shop_id: Option<i64>,
    products: Vec<i64>,
    /// Buyer i's token at index i.
    buyers: Vec<String>,
}

pub fn buyer_email(seed: u64, i: usize) -> String {
    format!("b{i}.s{seed}@load.scalectl.test")
}

fn seller_email(seed: u64) -> String {
    format!("seller.s{seed}@load.scalectl.test")
}

pub fn password(seed: u64) -> String {
    format!("load-{seed}-not-secret")
}

/// A made-up client address per buyer: per-client rate limits then see many clients,
/// as they would with real buyers. The seller is 10.255.255.254.
pub fn client_address(i: usize) -> HeaderValue {
    let i = i as u32;
    HeaderValue::from_str(&format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)).expect("an IPv4 address is a valid header")
}

fn setup_err(step: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Setup { step: step.into(), why: why.into() }
}

/// Sends `req`, again on 429, 5xx and connection errors (up to 8 times), and returns
/// the status and body of the first other answer.
pub async fn call(conn: &mut Conn, req: &Request, what: &str) -> Result<(u16, Bytes), Error> {
    let mut backoff = Duration::from_millis(100);
    let mut last = String::new();
    for _ in 0..8 {
        match conn.send(req, Duration::from_secs(30)).await {
            Reply::Response { status, body } if status != 429 && status < 500 => return Ok((status, body)),
            Reply::Response { status, body } => last = format!("{status} {}", String::from_utf8_lossy(&body)),
            Reply::Io => last = "connection error".into(),
            Reply::Timeout => last = "timeout".into(),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    Err(setup_err(what, format!("gave up after 8 attempts; last answer: {last}")))
}

/// `call`, insisting on one of `ok` and returning the body as JSON.
pub async fn call_json(conn: &mut Conn, req: &Request, what: &str, ok: &[u16]) -> Result<Value, Error> {
    let (status, body) = call(conn, req, what).await?;
    if !ok.contains(&status) {
        return Err(setup_err(what, format!("{status} {}", String::from_utf8_lossy(&body))));
    }
    serde_json::from_slice(&body).map_err(|e| setup_err(what, format!("reading the answer: {e}")))
}

/// Logs `email` in, registering it first when the shop does not know it; returns the token.
async fn sign_in(conn: &mut Conn, email: &str, password: &str, roles: &str, client: &HeaderValue) -> Result<(String, bool), Error> {
    let creds = Bytes::from(json!({"email": email, "password": password}).to_string());
    let login = Request::post("/login", creds).client(client);
    let (status, body) = call(conn, &login, "login").await?;
    let (status, body, registered) = if status == 401 {
        let reg = Request::post("/register", json!({"email": email, "password": password, "roles": roles}).to_string()).client(client);
        let (reg_status, b) = call(conn, &reg, "register").await?;
        if reg_status != 201 && reg_status != 409 {
            return Err(setup_err(format!("register {email}"), format!("{reg_status} {}", String::from_utf8_lossy(&b))));
        }
        let (s, b) = call(conn, &login, "login").await?;
        (s, b, reg_status == 201)
    } else {
        (status, body, false)
    };
    if status != 200 {
        return Err(setup_err(format!("login {email}"), format!("{status} {}", String::from_utf8_lossy(&body))));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| setup_err("login", e.to_string()))?;
    let token = v["token"].as_str().ok_or_else(|| setup_err("login", "no token in the answer"))?;
    Ok((token.to_owned(), registered))
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_cache(cfg: &SetupConfig, url: &str) -> Cache {
    let Some(path) = &cfg.cache else { return Cache::default() };
    let Ok(text) = std::fs::read_to_string(path) else { return Cache::default() };
    match serde_json::from_str::<Cache>(&text) {
        Ok(c) if c.url == url && c.seed == cfg.seed && now_unix().saturating_sub(c.created_unix) < CACHE_MAX_AGE.as_secs() => c,
        _ => Cache::default(),
    }
}

fn write_cache(cfg: &SetupConfig, cache: &Cache) -> Result<(), Error> {
    let Some(path) = &cfg.cache else { return Ok(()) };
    let io = |source| Error::Cache { path: path.clone(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(cache).unwrap_or_default()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Whether the shop still takes this token (`GET /me` answers 200).
async fn token_works(conn: &mut Conn, token: &str) -> bool {
    let req = Request::get("/me").token(bearer(token).as_ref());
    matches!(call(conn, &req, "check a cached token").await, Ok((200, _)))
}

/// Creates what the scenario needs, or finds it from an earlier run with this seed.
pub async fn prepare(target: &Target, url: &str, cfg: &SetupConfig) -> Result<Setup, Error> {
    let started = Instant::now();
    let mut cache = read_cache(cfg, url);
    let mut conn = Conn::new(target.clone());
    let password = password(cfg.seed);
    let seller_client = HeaderValue::from_static("10.255.255.254");

    // Trust the cache only if the shop still knows its tokens (a database restored from
    // elsewhere, or sessions deleted, would make every request a 401).
    let seller_ok = match &cache.seller {
        Some(t) => token_works(&mut conn, t).await,
        None => false,
    };
    if !seller_ok {
        cache = Cache { url: url.to_owned(), seed: cfg.seed, created_unix: now_unix(), ..Cache::default() };
    }
    for probe in [cache.buyers.first().cloned(), cache.buyers.last().cloned()].into_iter().flatten() {
        if !token_works(&mut conn, &probe).await {
            cache.buyers.clear();
        }
    }
    let mut stats = SetupStats::default();
    let seller = match cache.seller.clone().filter(|_| seller_ok) {
        Some(t) => t,
        None => sign_in(&mut conn, &seller_email(cfg.seed), &password, "seller", &seller_client).await?.0,
    };
    cache.seller = Some(seller.clone());
    let seller_auth = bearer(&seller).ok_or_else(|| setup_err("login", "unusable token"))?;
    if let Some(first) = cache.products.first() {
        let (status, _) = call(&mut conn, &Request::get(format!("/products/{first}")), "check the catalog").await?;
        if status != 200 {
            cache.products.clear();
            cache.shop_id = None;
        }
    }
    let shop_id = match cache.shop_id {
        Some(id) => id,
        None => {
            let req =
                Request::post("/shops", json!({"name": format!("load s{}", cfg.seed)}).to_string()).token(Some(&seller_auth)).client(&seller_client);
            let shop = call_json(&mut conn, &req, "create the shop", &[201]).await?;
            shop["id"].as_i64().ok_or_else(|| setup_err("create the shop", "no id"))?
        }
    };
    cache.shop_id = Some(shop_id);
    while cache.products.len() < cfg.products {
        let k = cache.products.len();
        let name = format!("{} {} item {k}", WORDS[k % WORDS.len()], WORDS[(k / WORDS.len() + 3) % WORDS.len()]);
        let id = create_product(&mut conn, &seller_auth, shop_id, &name, 1_000_000_000).await?;
        cache.products.push(id);
        stats.products_created += 1;
    }
    stats.reused = cache.buyers.len().min(cfg.buyers);
    if cache.buyers.len() < cfg.buyers {
        let (tokens, logged_in, registered) = sign_in_buyers(target, cfg, cache.buyers.len(), &password).await?;
        cache.buyers.extend(tokens);
        stats.logged_in = logged_in;
        stats.registered = registered;
    }
    write_cache(cfg, &cache)?;
    let buyers = cache
        .buyers
        .iter()
        .take(cfg.buyers)
        .enumerate()
        .map(|(i, t)| {
            Ok(Buyer {
                email: buyer_email(cfg.seed, i),
                auth: bearer(t).ok_or_else(|| setup_err("login", "unusable token"))?,
                client: client_address(i),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(Setup { seed: cfg.seed, password, seller: seller_auth, seller_client, shop_id, products: cache.products.clone(), buyers, stats })
}

/// A product of the seller's shop; returns its id.
/// A flash sale of `units` of `product_id`, starting `lead` from now (to the whole
/// millisecond, the instant the shop stores), at most `per_buyer_limit` units a buyer.
/// Returns the sale's id and its start.
pub async fn create_flash_sale(
    conn: &mut Conn,
    setup: &Setup,
    product_id: i64,
    units: u32,
    per_buyer_limit: u32,
    lead: Duration,
) -> Result<(i64, time::OffsetDateTime), Error> {
    let starts_at = time::OffsetDateTime::from(SystemTime::now()) + lead;
    let starts_at = starts_at.replace_nanosecond(starts_at.millisecond() as u32 * 1_000_000).unwrap_or(starts_at);
    let rfc3339 = starts_at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Setup { step: "flash sale".into(), why: e.to_string() })?;
    let body = json!({"product_id": product_id, "units": units, "starts_at": rfc3339, "per_buyer_limit": per_buyer_limit});
    let req = Request::post("/flash-sales", body.to_string()).token(Some(&setup.seller)).client(&setup.seller_client);
    let sale = call_json(conn, &req, "create the flash sale", &[201]).await?;
    let id = sale["id"].as_i64().ok_or_else(|| Error::Setup { step: "create the flash sale".into(), why: "no id".into() })?;
    Ok((id, starts_at))
}

pub async fn create_product(conn: &mut Conn, seller: &HeaderValue, shop_id: i64, name: &str, stock: u32) -> Result<i64, Error> {
    let body = json!({"shop_id": shop_id, "name": name, "description": "made by scalectl load", "price_cents": 1999, "stock": stock});
    let req = Request::post("/products", body.to_string()).token(Some(seller));
    let p = call_json(conn, &req, "create a product", &[201]).await?;
    p["id"].as_i64().ok_or_else(|| setup_err("create a product", "no id"))
}

/// Signs in buyers `from..cfg.buyers` with `cfg.concurrency` connections; returns their
/// tokens in order, and how many logged in and how many were registered.
async fn sign_in_buyers(target: &Target, cfg: &SetupConfig, from: usize, password: &str) -> Result<(Vec<String>, usize, usize), Error> {
    let total = cfg.buyers - from;
    let next = Arc::new(AtomicUsize::new(from));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.clamp(1, total.max(1)) {
        let (next, done, target, password, cfg) = (Arc::clone(&next), Arc::clone(&done), target.clone(), password.to_owned(), cfg.clone());
        tasks.spawn(async move {
            let mut conn = Conn::new(target);
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cfg.buyers {
                    return Ok::<_, Error>(got);
                }
                let (token, registered) = sign_in(&mut conn, &buyer_email(cfg.seed, i), &password, "buyer", &client_address(i)).await?;
                got.push((i, token, registered));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let progress = cfg.progress.then(|| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!("setup: {n}/{total} buyers signed in ({:.0}/s)", n as f64 / started.elapsed().as_secs_f64());
            }
        })
    });
    let mut all = Vec::with_capacity(total);
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| Error::Worker(e.to_string())).and_then(|r| r) {
            Ok(got) => all.extend(got),
            Err(e) => {
                // The first failure is the cause; the rest are the tasks we cancel.
                failed.get_or_insert(e);
                tasks.abort_all();
            }
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    all.sort_by_key(|(i, _, _)| *i);
    let registered = all.iter().filter(|(_, _, r)| *r).count();
    Ok((all.into_iter().map(|(_, t, _)| t).collect(), total - registered, registered))
}
