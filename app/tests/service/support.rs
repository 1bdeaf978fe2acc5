//! Test harness: one real PostgreSQL and one real Redis per test binary, started
//! lazily, reached over Unix sockets in a private directory, and stopped when this
//! process exits for any reason (their wrapper shell waits on our stdin pipe). Each
//! test gets a fresh, migrated database and its own Redis key prefix, and runs the
//! shop in-process on port 0.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop::{AppState, RateLimits, Settings};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgPool};

const PG_PORT: u16 = 5432;
/// The password clients give PgBouncer (PostgreSQL itself trusts its socket).
const PGBOUNCER_PASSWORD: &str = "bouncer-secret";
/// Server connections PgBouncer keeps per database: small, so that many client
/// connections share each one.
pub const PGBOUNCER_POOL_SIZE: i64 = 2;
/// The role PgBouncer's server connections log in as (`usename` in pg_stat_activity).
pub const PGBOUNCER_SERVER_ROLE: &str = "bouncer";

struct Infra {
    dir: PathBuf,
    /// Held open for the life of the process: when it closes, the wrapper stops the
    /// servers and removes `dir`.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static INFRA: OnceLock<Infra> = OnceLock::new();

fn postgres_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql missing)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop().expect("no PostgreSQL bin directory with initdb")
}

/// uid/gid to run the servers as: PostgreSQL refuses to run as root.
fn server_user() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .or(Some((65534, 65534)))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn start_infra() -> Infra {
    let user = server_user();
    let dir = std::env::temp_dir().join(format!("shop-test-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).expect("create test dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown test dir");
    }
    let bindir = postgres_bindir();
    let data = dir.join("data");
    let out = as_user(&mut Command::new(bindir.join("initdb")), user)
        .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .current_dir(&dir)
        .output()
        .expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

    // The wrapper starts both servers, then blocks reading stdin; EOF (our exit,
    // however it happens) stops them and removes the directory.
    let script = r#"
        "$1" -D "$2" -k "$3" -p 5432 -c listen_addresses= -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB >"$3/pg.log" 2>&1 &
        pg=$!
        redis-server --port 0 --unixsocket "$3/redis.sock" --unixsocketperm 700 --save '' --appendonly no \
             --maxclients 10000 >"$3/redis.log" 2>&1 &
        rd=$!
        read _unused
        kill -INT $pg 2>/dev/null; kill -TERM $rd 2>/dev/null
        wait $pg $rd
        rm -rf "$3"
    "#;
    let mut child = as_user(&mut Command::new("sh"), user)
        .args(["-c", script, "wrapper"])
        .arg(bindir.join("postgres"))
        .arg(&data)
        .arg(&dir)
        .current_dir(&dir)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server wrapper");
    let stdin = child.stdin.take().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        let pg_ready = pid.lines().any(|l| l.trim() == "ready");
        let redis_ready = std::os::unix::net::UnixStream::connect(dir.join("redis.sock")).is_ok();
        if pg_ready && redis_ready {
            break;
        }
        if Instant::now() > deadline {
            let mut log = String::new();
            let _ = std::fs::File::open(dir.join("pg.log")).and_then(|mut f| f.read_to_string(&mut log));
            panic!("test servers did not start (pg ready {pg_ready}, redis ready {redis_ready}); pg log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Infra { dir, _stdin: Mutex::new(stdin), _child: Mutex::new(child) }
}

fn infra() -> &'static Infra {
    INFRA.get_or_init(start_infra)
}

/// PgBouncer in transaction mode in front of the test PostgreSQL, started on first use
/// and stopped (like the servers) when this process exits.
struct Bouncer {
    port: u16,
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static BOUNCER: OnceLock<Bouncer> = OnceLock::new();

fn pgbouncer_bin() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("PgBouncer is not installed (apt-get install pgbouncer)")
}

/// Starts PgBouncer on a free loopback port; `None` when it did not come up there (the
/// port was taken between choosing and binding it), so the caller tries another.
fn try_start_bouncer(dir: &std::path::Path, user: Option<(u32, u32)>) -> Option<Bouncer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("pick a port").port();
    let _ = std::fs::remove_file(dir.join("pgbouncer.log"));
    // `*`: every test database, each with its own pool of PGBOUNCER_POOL_SIZE server
    // connections, logged in as their own role so tests can count them.
    let config = format!(
        "[databases]\n\
         * = host={pg_dir} port={PG_PORT} user={PGBOUNCER_SERVER_ROLE}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir = {dir}\n\
         auth_type = scram-sha-256\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n\
         default_pool_size = {PGBOUNCER_POOL_SIZE}\n\
         max_client_conn = 1000\n\
         pidfile = {dir}/pgbouncer.pid\n\
         logfile = {dir}/pgbouncer.log\n",
        pg_dir = infra().dir.display(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
    std::fs::write(dir.join("userlist.txt"), format!("\"postgres\" \"{PGBOUNCER_PASSWORD}\"\n")).unwrap();
    if let Some((uid, gid)) = user {
        for f in ["", "pgbouncer.ini", "userlist.txt"] {
            std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).unwrap();
        }
    }
    // Like the servers' wrapper: EOF on stdin (our exit, however it happens) stops it.
    let script = r#"
        "$1" "$2" >/dev/null 2>&1 &
        pb=$!
        read _unused
        kill -TERM $pb 2>/dev/null
        wait $pb
    "#;
    let mut child = as_user(&mut Command::new("sh"), user)
        .args(["-c", script, "wrapper"])
        .arg(pgbouncer_bin())
        .arg(dir.join("pgbouncer.ini"))
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pgbouncer wrapper");
    let stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let log = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
        if log.contains("FATAL") {
            break;
        }
        // Ours once it logs that it listens on our port, then accepts there.
        if log.contains(&format!("listening on 127.0.0.1:{port}")) && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Bouncer { port, _stdin: Mutex::new(stdin), _child: Mutex::new(child) });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let _ = child.wait();
    None
}

fn bouncer() -> &'static Bouncer {
    BOUNCER.get_or_init(|| {
        let user = server_user();
        let dir = infra().dir.join("pgbouncer");
        std::fs::create_dir_all(&dir).expect("create pgbouncer dir");
        (0..5).find_map(|_| try_start_bouncer(&dir, user)).unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
            panic!("pgbouncer did not start; log:\n{log}")
        })
    })
}

/// The URL of database `db` (a name from [`db_name`]) through the test PgBouncer.
pub fn pgbouncer_url(db: &str) -> String {
    let port = bouncer().port;
    format!("postgres://postgres:{PGBOUNCER_PASSWORD}@127.0.0.1:{port}/{db}")
}

/// Server connections PgBouncer holds to database `db` right now.
pub async fn pgbouncer_server_connections(db: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2")
        .bind(db)
        .bind(PGBOUNCER_SERVER_ROLE)
        .fetch_one(&PgPoolOptions::new().connect_with(pg_options(db)).await.unwrap())
        .await
        .unwrap()
}

/// The database name in a URL from [`fresh_database`].
pub fn db_name(url: &str) -> &str {
    let base = url.split('?').next().unwrap_or(url);
    base.rsplit_once('/').map_or(base, |(_, name)| name)
}

pub fn redis_url() -> String {
    format!("redis+unix://{}", infra().dir.join("redis.sock").display())
}

fn pg_options(db: &str) -> PgConnectOptions {
    PgConnectOptions::new().socket(&infra().dir).port(PG_PORT).username("postgres").database(db)
}

fn pg_url(db: &str) -> String {
    format!("postgres://postgres@localhost/{db}?host={}&port={PG_PORT}", infra().dir.display())
}

/// A fresh, migrated database; returns its URL. With `SHOP_TEST_PARTITIONED=1` its
/// orders are partitioned by month, so every test can run against that layout.
/// A user with a session, inserted directly into `db` (argon2 would slow tests down);
/// returns (id, bearer token).
pub async fn user_with_session(db: &PgPool, roles: &str) -> (i64, String) {
    let email = format!("{}@example.test", uuid::Uuid::new_v4().simple());
    let (id,): (i64,) = sqlx::query_as("INSERT INTO users (email, password_hash, roles) VALUES ($1, 'x', $2) RETURNING id")
        .bind(&email)
        .bind(roles)
        .fetch_one(db)
        .await
        .unwrap();
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, now() + interval '1 hour')")
        .bind(&shop::extract::hash_token(&token)[..])
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    (id, token)
}

pub async fn fresh_database() -> String {
    let url = fresh_plain_database().await;
    if std::env::var_os("SHOP_TEST_PARTITIONED").is_some_and(|v| v == "1") {
        let pool = PgPoolOptions::new().max_connections(1).connect_with(pg_options(db_name(&url))).await.unwrap();
        let config = shop::partitions::PartitionConfig { premake: 1, today: None };
        shop::partitions::partition_orders(&shop::db::Db::new(pool.clone(), Default::default()), config).await.expect("partition orders");
        pool.close().await;
    }
    url
}

/// A fresh, migrated database with the plain (unpartitioned) orders table.
pub async fn fresh_plain_database() -> String {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect_with(&pg_options("postgres")).await.expect("connect admin");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
    // Idempotent, and cheap enough to run for every database: the role PgBouncer's
    // server connections use (a superuser, like `postgres`, so it sees every table).
    admin
        .execute(
            format!(
                "DO $$ BEGIN CREATE ROLE {PGBOUNCER_SERVER_ROLE} LOGIN SUPERUSER;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
            .as_str(),
        )
        .await
        .expect("create the pgbouncer role");
    admin.close().await.ok();
    let pool = PgPoolOptions::new().max_connections(1).connect_with(pg_options(&name)).await.unwrap();
    shop::db::migrate(&pool).await.expect("migrate");
    pool.close().await;
    pg_url(&name)
}

pub struct Options {
    pub redis: bool,
    pub rate_limits: RateLimits,
    pub pool_size: u32,
    pub roles: shop::Roles,
    pub read_database_url: Option<String>,
    pub unsafe_non_idempotent_checkout: bool,
    /// The shop reaches the primary through the test PgBouncer (transaction mode) with
    /// `db_pooler = transaction`; fixtures and assertions still go straight to PostgreSQL.
    pub through_pgbouncer: bool,
    /// A Redis URL other than the test Redis (e.g. a [`RedisProxy`]); the shop is then
    /// not required to have connected at start.
    pub redis_url: Option<String>,
    /// The Redis key prefix; instances given the same one share their Redis state.
    pub redis_prefix: Option<String>,
    pub read_your_writes_window: Duration,
    pub session_cache: Duration,
    pub session_share: Duration,
    pub header_read_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            redis: true,
            rate_limits: RateLimits::default(),
            pool_size: 10,
            roles: shop::Roles::all(),
            read_database_url: None,
            unsafe_non_idempotent_checkout: false,
            through_pgbouncer: false,
            redis_url: None,
            redis_prefix: None,
            read_your_writes_window: Duration::from_secs(5),
            session_cache: Settings::new("").session_cache,
            session_share: Settings::new("").session_share,
            header_read_timeout: Settings::new("").header_read_timeout,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// A separate pool on the primary for assertions and fixtures.
    pub db: PgPool,
    pub state: AppState,
    pub redis_prefix: String,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self.body
    }
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    pub fn field(&self) -> &str {
        self.body["field"].as_str().unwrap_or("")
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let db_url = fresh_database().await;
    spawn_on(db_url, opts).await
}

/// Starts the shop on 127.0.0.1:0 against an existing database.
pub async fn spawn_on(db_url: String, opts: Options) -> TestApp {
    let redis_prefix = opts.redis_prefix.unwrap_or_else(|| format!("t{}:", uuid::Uuid::new_v4().simple()));
    let mut settings = if opts.through_pgbouncer {
        let mut s = Settings::new(pgbouncer_url(db_name(&db_url)));
        s.db_pooler = shop::db::Pooler::Transaction;
        s
    } else {
        Settings::new(db_url.clone())
    };
    let must_connect = opts.redis && opts.redis_url.is_none();
    settings.redis_url = opts.redis_url.or_else(|| opts.redis.then(redis_url));
    settings.redis_prefix = redis_prefix.clone();
    settings.rate_limits = opts.rate_limits;
    settings.db_pool_size = opts.pool_size;
    settings.roles = opts.roles;
    settings.read_database_url = opts.read_database_url;
    settings.unsafe_non_idempotent_checkout = opts.unsafe_non_idempotent_checkout;
    settings.read_your_writes_window = opts.read_your_writes_window;
    settings.session_cache = opts.session_cache;
    settings.session_share = opts.session_share;
    settings.header_read_timeout = opts.header_read_timeout;
    let state = AppState::connect(settings).await.expect("state");
    if must_connect {
        assert!(state.redis().is_some(), "redis did not connect");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(shop::serve(listener, state.clone(), std::future::pending()));
    let db = PgPoolOptions::new().max_connections(5).connect(&db_url).await.unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    TestApp { base: format!("http://{addr}"), client, db, state, redis_prefix }
}

impl TestApp {
    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        self.send_with(method, path, token, body, &[]).await
    }

    pub async fn send_with(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(reqwest::Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(reqwest::Method::PUT, path, token, Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(reqwest::Method::DELETE, path, token, None).await
    }
    /// Puts `quantity` of `product` in the buyer's cart (201 expected).
    pub async fn add_to_cart(&self, token: &str, product: i64, quantity: i32) {
        self.post("/cart/items", Some(token), json!({"product_id": product, "quantity": quantity})).await.expect(201);
    }

    pub async fn checkout(&self, token: &str, key: &str) -> Resp {
        self.send_with(reqwest::Method::POST, "/checkout", Some(token), None, &[("Idempotency-Key", key)]).await
    }

    /// A user with a session, inserted directly (argon2 would slow tests down);
    /// returns (id, token).
    pub async fn user(&self, roles: &str) -> (i64, String) {
        user_with_session(&self.db, roles).await
    }

    /// `n` buyers in two statements; tokens are `"{prefix}-{i}"`.
    pub async fn bulk_buyers(&self, n: i64, prefix: &str) -> Vec<String> {
        sqlx::query(
            "WITH u AS (
                 INSERT INTO users (email, password_hash, roles)
                 SELECT $2 || '-' || g || '@bulk.test', 'x', 'buyer' FROM generate_series(1, $1) g
                 RETURNING id, email)
             INSERT INTO sessions (token_hash, user_id, expires_at)
             SELECT sha256(convert_to(split_part(email, '@', 1), 'UTF8')), id, now() + interval '1 hour' FROM u",
        )
        .bind(n)
        .bind(prefix)
        .execute(&self.db)
        .await
        .unwrap();
        (1..=n).map(|i| format!("{prefix}-{i}")).collect()
    }

    /// A seller with a shop and one product; returns (seller token, shop id, product id).
    pub async fn seller_product(&self, price_cents: i64, stock: i32) -> (String, i64, i64) {
        let (_, token) = self.user("seller").await;
        let shop = self.post("/shops", Some(&token), json!({"name": "Shop"})).await.expect(201);
        let shop_id = shop["id"].as_i64().unwrap();
        let product = self
            .post(
                "/products",
                Some(&token),
                json!({"shop_id": shop_id, "name": "Widget", "description": "d", "price_cents": price_cents, "stock": stock}),
            )
            .await
            .expect(201);
        (token, shop_id, product["id"].as_i64().unwrap())
    }

    pub async fn stock(&self, product_id: i64) -> i32 {
        sqlx::query_scalar("SELECT stock FROM products WHERE id = $1").bind(product_id).fetch_one(&self.db).await.unwrap()
    }

    /// The fixture pool as the worker sees a database: directly, no pooler.
    pub fn worker_db(&self) -> shop::db::Db {
        shop::db::Db::new(self.db.clone(), shop::db::Pooler::None)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

/// The value of an unlabelled metric on the shop's `/metrics`.
pub async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.get("/metrics", None).await.expect(200);
    let text = text.as_str().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// A TCP proxy in front of the test Redis that a test can cut or freeze, taking Redis
/// away from a running shop without stopping the server other tests share.
pub struct RedisProxy {
    pub url: String,
    /// The accept loop and every proxied connection; `None` once cut.
    tasks: std::sync::Arc<Mutex<Option<Vec<tokio::task::AbortHandle>>>>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What clients sent while frozen (and never reached Redis).
    swallowed: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl RedisProxy {
    pub async fn start() -> RedisProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let socket = infra().dir.join("redis.sock");
        let tasks = std::sync::Arc::new(Mutex::new(Some(Vec::new())));
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swallowed = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (registry, is_frozen, sink) = (tasks.clone(), frozen.clone(), swallowed.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let socket = socket.clone();
                let (is_frozen, sink) = (is_frozen.clone(), sink.clone());
                let conn = tokio::spawn(async move {
                    let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let requests = async {
                        let mut buf = [0u8; 4096];
                        loop {
                            let n = match client_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if is_frozen.load(Ordering::SeqCst) {
                                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                            } else if server_tx.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        _ = tokio::io::copy(&mut server_rx, &mut client_tx) => {}
                    }
                });
                match registry.lock().unwrap().as_mut() {
                    Some(list) => list.push(conn.abort_handle()),
                    None => conn.abort(),
                }
            }
        });
        tasks.lock().unwrap().as_mut().unwrap().push(accept.abort_handle());
        RedisProxy { url, tasks, frozen, swallowed }
    }

    /// Closes the port and every connection through it: Redis is down for its clients.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().take().into_iter().flatten() {
            task.abort();
        }
    }

    /// Redis hangs (as under SIGSTOP): connections stay open, requests are never answered.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many times `command` was sent while frozen.
    pub fn swallowed(&self, command: &str) -> usize {
        let needle = format!("\r\n{command}\r\n").into_bytes();
        let sent = self.swallowed.lock().unwrap();
        sent.windows(needle.len()).filter(|w| *w == needle.as_slice()).count()
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}
