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
