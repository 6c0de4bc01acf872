//! `eventfold relay` against real Kafka-protocol brokers (tansu, started here).

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker of this test's own, in memory, with the given cluster id.
struct Tansu {
    child: Child,
    brokers: String,
}

impl Tansu {
    fn start(cluster: &str) -> Self {
        let binary = std::env::var("EVENTFOLD_TANSU")
            .unwrap_or_else(|_| "/var/tmp/eventfold-tansu".to_owned());
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--cluster-id", cluster])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e} (scripts/setup installs tansu)"));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            brokers: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A relay that published the log to one Kafka cluster refuses another (its topics
/// would lack every event before the relay's checkpoint; a worker building a model from
/// them would build it without a word) and stops with the reason, rather than going on
/// from its checkpoint; `relay --from-start` publishes the whole log to the new cluster.
#[test]
fn a_relay_refuses_another_kafka_cluster_once_it_has_published() {
    let dir = std::env::temp_dir().join(format!("eventfold-relay-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let eventfold = |args: &[&str], brokers: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eventfold"));
        command
            .args(args)
            .env("DATABASE_URL", &url)
            .env("KAFKA_BROKERS", brokers)
            .env("EVENTFOLD_KAFKA_TOPIC_PREFIX", "clusters.")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    for i in 0..3 {
        let o = eventfold(
            &[
                "streams",
                "append",
                &format!("note-{i}"),
                "--type",
                "NoteTaken",
                "--data",
                "{}",
            ],
            "",
        )
        .env_remove("KAFKA_BROKERS")
        .output()
        .expect("append");
        assert!(o.status.success(), "{}", text(&o));
    }
    // The relay's checkpoint, as `projections status` reports it.
    let checkpoint = || {
        let status = eventfold(&["projections", "status", "--json"], "")
            .output()
            .expect("status");
        let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        rows.as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == "kafka_relay.v1"))
            .and_then(|r| r["checkpoint"].as_i64())
    };
    // Runs the relay for `secs` seconds, or until it stops by itself: its exit status
    // then (`None`: still running, killed) and what it printed.
    let relay_for = |args: &[&str], brokers: &str, secs: u64| {
        let mut child = eventfold(args, brokers).spawn().expect("start the relay");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("its state") {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(secs) {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (status, text(&child.wait_with_output().expect("output")))
    };

    let first = Tansu::start("cluster-one");
    let (status, out) = relay_for(&["relay"], &first.brokers, 5);
    assert!(status.is_none(), "{out}");
    assert_eq!(checkpoint(), Some(3), "{out}");
    drop(first);

    // Another cluster: refused, the relay stops by itself, nothing moves.
    let second = Tansu::start("cluster-two");
    let (status, out) = relay_for(&["relay"], &second.brokers, 30);
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {out}");
    assert!(
        out.contains(
            "error: the relay stopped: the relay has published the log through position 3 \
             to the Kafka cluster \"cluster-one\""
        ) && out.contains("is the cluster \"cluster-two\"")
            && out.contains("eventfold relay --from-start"),
        "{out}"
    );
    assert_eq!(checkpoint(), Some(3));

    // `--from-start` publishes everything to it; from then on it is the relay's cluster.
    let (status, out) = relay_for(&["relay", "--from-start"], &second.brokers, 5);
    assert!(status.is_none(), "{out}");
    assert!(
        out.contains("publishing the log again from its start") && out.contains("position 3 of 3"),
        "{out}"
    );
    let (status, out) = relay_for(&["relay"], &second.brokers, 3);
    assert!(status.is_none(), "{out}");

    // Not while another process holds the relay's lease: its relay would write its
    // checkpoint over the reset (and go on under its own prefix).
    let mut running = eventfold(&["relay"], &second.brokers)
        .spawn()
        .expect("start the relay");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = eventfold(&["projections", "status", "--json"], "")
            .output()
            .expect("status");
        let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        let owned = rows.as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["name"] == "kafka_relay.v1" && r["owner"].is_string())
        });
        if owned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never took its lease: {rows}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, out) = relay_for(&["relay", "--from-start"], &second.brokers, 20);
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {out}");
    assert!(out.contains("holds the relay's lease"), "{out}");
    assert_eq!(checkpoint(), Some(3), "the reset was not made");
    let _ = running.kill();
    let _ = running.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A relay that published the log under one topic prefix refuses another (`relay` and
/// `serve` alike): it would go on from its checkpoint into topics that lack every event
/// before it. `relay --from-start` publishes the whole log again under the new prefix.
#[test]
fn a_relay_refuses_a_new_topic_prefix_once_it_has_published() {
    let dir = std::env::temp_dir().join(format!("eventfold-relay-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("log.db").display());
    // Nothing listens there: nothing goes out.
    let brokers = format!("127.0.0.1:{}", free_port());
    let relay = |prefix: &str, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eventfold"));
        command
            .arg("relay")
            .args(args)
            .env("DATABASE_URL", &url)
            .env("KAFKA_BROKERS", &brokers)
            .env("EVENTFOLD_KAFKA_TOPIC_PREFIX", prefix)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    // Runs until killed: `None` when it was still running after 3 s.
    let run_briefly = |mut command: Command| {
        let mut child = command.spawn().expect("start the relay");
        std::thread::sleep(std::time::Duration::from_secs(3));
        let running = child.try_wait().expect("its state").is_none();
        let _ = child.kill();
        let out = child.wait_with_output().expect("its output");
        (running, out)
    };
    // The first run records its prefix (the brokers are unreachable: nothing goes out).
    let (running, out) = run_briefly(relay("first.", &[]));
    assert!(running, "{}", text(&out));
    // As if it had published positions 1 to 5.
    let db = url.clone();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let checkpoint = |set: Option<i64>| {
        rt.block_on(async {
            let pool = sqlx::SqlitePool::connect(&db).await.expect("open");
            if let Some(at) = set {
                sqlx::query("UPDATE eventfold_reaction_checkpoints SET position = $1 WHERE name = 'kafka_relay.v1'")
                    .bind(at)
                    .execute(&pool)
                    .await
                    .expect("checkpoint");
            }
            let row: (i64, String) = sqlx::query_as(
                "SELECT c.position, d.topic_prefix FROM eventfold_reaction_checkpoints c \
                 JOIN eventfold_relay_destination d ON d.name = c.name WHERE c.name = 'kafka_relay.v1'",
            )
            .fetch_one(&pool)
            .await
            .expect("the relay's rows");
            pool.close().await;
            row
        })
    };
    assert_eq!(checkpoint(Some(5)), (5, "first.".to_owned()));

    let refused = relay("second.", &[]).output().expect("run");
    assert!(!refused.status.success());
    let message = text(&refused);
    assert!(
        message.contains("published the log through position 5 to topics first.{category}")
            && message.contains("--from-start"),
        "{message}"
    );
    let serve_port = free_port();
    let serve = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("KAFKA_BROKERS", &brokers)
        .env("EVENTFOLD_KAFKA_TOPIC_PREFIX", "second.")
        .env("EVENTFOLD_LISTEN", format!("127.0.0.1:{serve_port}"))
        .current_dir(&dir)
        .output()
        .expect("run");
    assert!(!serve.status.success());
    assert!(
        text(&serve).contains("to topics first.{category}"),
        "{}",
        text(&serve)
    );
    assert_eq!(
        checkpoint(None),
        (5, "first.".to_owned()),
        "nothing changed"
    );

    let (running, out) = run_briefly(relay("second.", &["--from-start"]));
    assert!(running, "{}", text(&out));
    assert!(
        text(&out).contains("publishing the log again from its start under second.{category} (the relay had published through position 5)"),
        "{}",
        text(&out)
    );
    assert_eq!(checkpoint(None), (0, "second.".to_owned()));
    let _ = std::fs::remove_dir_all(&dir);
}
