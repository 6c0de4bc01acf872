//! What the black-box tests of `eventfold serve` share: a real server on a random port,
//! its HTTP helpers, and servers of the tests' own (Redis, NATS) that can be stopped.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

pub const SECRET: &str = "e2e-secret";
pub const SERVICE_KEY: &str = "e2e-service";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub dir: std::path::PathBuf,
    /// What it printed before listening.
    pub startup: Vec<String>,
}

impl Server {
    pub fn start(database_url: Option<String>) -> Server {
        Self::start_with(database_url, &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with(database_url: Option<String>, env: &[(&str, &str)]) -> Server {
        let dir = std::env::temp_dir().join(format!("eventfold-serve-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url =
            database_url.unwrap_or_else(|| format!("sqlite://{}", dir.join("log.db").display()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_eventfold"));
        command.env_remove("REDIS_URL");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("EVENTFOLD_LISTEN", "127.0.0.1:0")
            .env("EVENTFOLD_JWT_SECRET", SECRET)
            .env(
                "EVENTFOLD_API_KEYS",
                format!("{SERVICE_KEY}=service:ingest"),
            )
            .env("EVENTFOLD_CONSISTENCY_WAIT_MS", "3000")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn eventfold serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut startup = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("read stdout");
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.to_owned();
            }
            startup.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            dir,
            startup,
        }
    }

    /// What it has logged so far (JSON lines: stderr is not a terminal).
    pub fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("stderr.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn token(user: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims { sub: user, exp },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

pub async fn post(
    client: &Client,
    server: &Server,
    path: &str,
    who: &str,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let mut request = client.post(server.url(path)).json(&body);
    request = if who == "service" {
        request.header("x-api-key", SERVICE_KEY)
    } else {
        request.bearer_auth(token(who))
    };
    let response = request.send().await.expect("send");
    let status = response.status();
    let token = response
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.json().await.unwrap_or(Value::Null), token)
}

pub async fn get(client: &Client, server: &Server, path: &str, who: &str) -> (StatusCode, Value) {
    let mut request = client.get(server.url(path));
    request = match who {
        "service" => request.header("x-api-key", SERVICE_KEY),
        "nobody" => request,
        user => request.bearer_auth(token(user)),
    };
    let response = request.send().await.expect("send");
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A path of the OpenAPI document with a plausible value in each parameter (UUIDs
/// for the ids that are UUIDs).
pub fn concrete(template: &str) -> String {
    template
        .replace("{user_id}", "u1")
        .replace("{sport}", "running")
        .replace("{week}", "2026-W10")
        .replace("{device_id}", "spk-1")
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "6b1f8e3a-2f4c-4d6e-9a1b-3c5d7e9f0a2b"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Calls one operation of the document (`get` or `post`, a `{}` body) as the service.
pub async fn call_documented(
    client: &Client,
    server: &Server,
    method: &str,
    path: &str,
) -> (StatusCode, Value) {
    let request = match method {
        "post" => client.post(server.url(path)).json(&serde_json::json!({})),
        "get" => client.get(server.url(path)),
        other => panic!("{other} {path}: a method the tests do not call"),
    };
    let response = request
        .header("x-api-key", SERVICE_KEY)
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// RFC 3339 of epoch seconds given as text.
pub fn rfc3339(secs: &str) -> String {
    let secs: i64 = secs.parse().expect("seconds");
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `serve` on a PostgreSQL database and a Redis server of the test's own (a fresh key
/// prefix), with `env` besides; the database and Redis live as long as the result.
pub async fn serve_with_own_redis(
    env: &[(&str, &str)],
) -> (OwnRedis, eventfold_event_log::testing::PgTestDb, Server) {
    let redis = OwnRedis::start();
    let db = eventfold_event_log::testing::PgTestDb::new()
        .await
        .expect("test database");
    let prefix = format!("eventfold-test:{}:", uuid::Uuid::new_v4().simple());
    let mut all = vec![
        ("REDIS_URL", redis.url.as_str()),
        ("EVENTFOLD_REDIS_PREFIX", prefix.as_str()),
    ];
    all.extend_from_slice(env);
    let server = Server::start_with(Some(db.url()), &all);
    // In this order the server is dropped (killed) first, then the database and Redis.
    (redis, db, server)
}

/// A `redis-server` of the test's own on a free port, so that it can be frozen.
pub struct OwnRedis {
    pub child: Child,
    pub url: String,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `nats-server -js` of the test's own, on a free port with its own store directory,
/// so that it can be stopped and started again with its streams intact.
pub struct OwnNats {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    dir: std::path::PathBuf,
}

impl OwnNats {
    pub fn start() -> OwnNats {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("eventfold-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("nats store dir");
        let mut nats = OwnNats {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        };
        nats.up();
        nats
    }

    /// Starts the server (again) on its port and store.
    pub fn up(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server package) must be installed");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    /// Stops the server (SIGTERM, then SIGKILL) and waits for it to exit.
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every message of a JetStream stream, in order: `(subject, Nats-Msg-Id, payload)`.
pub async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(url).await.expect("connect to nats");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = match jetstream.get_stream(stream).await {
        Ok(stream) => stream,
        Err(_) => return Vec::new(),
    };
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let payload = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        out.push((message.subject.to_string(), id, payload));
    }
    out
}

/// POSTs with an Idempotency-Key until an answer comes, whichever server `base` names
/// now (tests that kill and restart `serve`); panics on a 4xx.
pub async fn post_until_answered(
    client: &Client,
    base: &std::sync::RwLock<String>,
    path: &str,
    who: &str,
    key: &str,
    body: &Value,
) -> Value {
    for _ in 0..400 {
        let url = format!(
            "{}{path}",
            base.read().map(|b| b.clone()).unwrap_or_default()
        );
        let sent = client
            .post(url)
            .bearer_auth(token(who))
            .header("idempotency-key", key)
            .json(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return r.json().await.unwrap_or(Value::Null),
            Ok(r) if r.status().is_client_error() => {
                panic!(
                    "{path}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!("{path}: no answer after 400 attempts")
}

/// A `clickhouse-server` of the test's own on free ports with its own data directory,
/// so that it can be stopped and started again with its tables.
pub struct OwnClickHouse {
    child: Option<Child>,
    pub url: String,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnClickHouse {
    pub fn start() -> OwnClickHouse {
        let dir = std::env::temp_dir().join(format!("eventfold-ch-{}", uuid::Uuid::new_v4()));
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).expect("clickhouse dirs");
        }
        let (http, tcp, inter) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{inter}</interserver_http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.xml"), config).expect("clickhouse config");
        let mut own = OwnClickHouse {
            child: None,
            url: format!("http://127.0.0.1:{http}"),
            port: http,
            dir,
        };
        own.up();
        own
    }

    /// Starts the server (again) on its ports and data.
    pub fn up(&mut self) {
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server (Debian's clickhouse-server package) must be installed");
        self.child = Some(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("clickhouse-server did not listen on {}", self.port);
    }

    /// Stops it (SIGKILL: an outage, not a shutdown) and waits for it to exit.
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy of the test's own in front of a real server, to take the server away
/// and bring it back without touching it (others share it): [`TcpProxy::down`] closes
/// every connection through it and refuses new ones, as a server that died would;
/// [`TcpProxy::up`] listens again on the same port.
pub struct TcpProxy {
    pub port: u16,
    target: std::net::SocketAddr,
    listening: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hanging: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl TcpProxy {
    pub fn start(target: std::net::SocketAddr) -> TcpProxy {
        let mut proxy = TcpProxy {
            port: free_port(),
            target,
            listening: Default::default(),
            hanging: Default::default(),
            connections: Default::default(),
            acceptor: None,
        };
        proxy.up();
        proxy
    }

    pub fn up(&mut self) {
        use std::sync::atomic::Ordering;
        if self.acceptor.is_some() {
            self.down();
        }
        self.hanging.store(false, Ordering::SeqCst);
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        self.listening.store(true, Ordering::SeqCst);
        let (listening, hanging, connections, target) = (
            self.listening.clone(),
            self.hanging.clone(),
            self.connections.clone(),
            self.target,
        );
        self.acceptor = Some(std::thread::spawn(move || {
            while listening.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = client.set_nonblocking(false);
                if hanging.load(Ordering::SeqCst) {
                    if let Ok(mut all) = connections.lock() {
                        all.push(client);
                    }
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let pipes = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                if let Ok(mut all) = connections.lock() {
                    all.extend([client, server]);
                }
                for pipe in pipes {
                    if let (Ok(mut from), Ok(mut to)) = pipe {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        }));
    }

    /// The server stops answering without refusing anything (a network partition, a
    /// host gone without a reset): new connections are accepted but never answered, and
    /// every connection open through the proxy is closed. [`TcpProxy::up`] ends it.
    pub fn hang(&mut self) {
        self.hanging
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut all) = self.connections.lock() {
            for stream in all.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn down(&mut self) {
        self.listening
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if let Ok(mut all) = self.connections.lock() {
            for stream in all.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.down();
    }
}

/// A SQLite store in a temporary folder of its own (`eventfold-{label}-…`), filled by
/// `eventfold demo --users 20`: the folder (remove it) and the store's URL.
pub fn demo_store(label: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("eventfold-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["demo", "--users", "20"])
        .env("DATABASE_URL", &url)
        .env_remove("REDIS_URL")
        .output()
        .expect("run demo");
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    (dir, url)
}

/// Whether `/readyz` answers 200 within `limit` (asked every 100 ms).
pub async fn ready_within(client: &Client, server: &Server, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let response = client
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if response.status() == StatusCode::OK {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `eventfold ARGS` on the log at `url` (no Redis), asserted to succeed.
pub fn succeeds(url: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("REDIS_URL")
        .output()
        .expect("eventfold runs");
    assert!(
        output.status.success(),
        "eventfold {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `name`'s row of `eventfold projections status --json` on the log at `url`.
pub fn status_row(url: &str, name: &str) -> Value {
    let status = succeeds(url, &["projections", "status", "--json"]);
    let rows: Value = serde_json::from_slice(&status.stdout).expect("json");
    rows.as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no row for {name}: {rows}"))
}
