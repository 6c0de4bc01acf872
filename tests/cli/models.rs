//! The read models from the command line: Kafka-fed workers, replay and reset.

use super::*;

/// A Kafka-fed worker that receives nothing says what it waits for, every two seconds,
/// instead of printing "0 messages" (or nothing at all while no partition is assigned).
#[test]
fn a_worker_that_receives_nothing_says_what_it_waits_for() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args([
            "project",
            "--from",
            "kafka",
            "--group",
            "g",
            "--projection",
            "reminders.v1",
        ])
        .env("DATABASE_URL", s.url())
        .env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))
        .current_dir(&s.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a worker");
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("its output");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("no message yet: waiting for 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(!text.contains("0 messages, 0 applied (0/s)"), "{text}");
    // Nothing arrived: the model stays with the log (it used to be taken over as the
    // worker started, and `serve` stopped feeding it until a rebuild).
    assert!(!text.contains("fed from Kafka"), "{text}");
    let status = s.run(&["projections", "status"]);
    let row = stdout(&status)
        .lines()
        .find(|l| l.starts_with("reminders.v1 "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(!row.is_empty(), "{}", stdout(&status));
    assert!(!row.contains("fed_from_kafka"), "{row}");
}

/// A model named twice is projected once (two runners of one model in one process).
#[test]
fn a_worker_feeds_a_model_named_twice_once() {
    use std::io::BufRead;
    let s = Scratch::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["project", "--from", "log"])
        .args([
            "--projection",
            "reminders.v1",
            "--projection",
            "reminders.v1",
        ])
        .env("DATABASE_URL", s.url())
        .current_dir(&s.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a worker");
    let mut first = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut first);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        first.trim(),
        "projecting reminders.v1 from the log; Ctrl-C stops"
    );
}

#[test]
fn replay_and_reset_work_from_the_command_line() {
    let s = Scratch::new();
    let demo = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["demo", "--users", "10"])
        .env("DATABASE_URL", s.url())
        .current_dir(&s.0)
        .output()
        .expect("run");
    assert!(demo.status.success(), "{}", stderr(&demo));
    // (A name given twice is rebuilt once.)
    let replay = s.run(&["replay", "workouts.v2", "reminders.v1", "workouts.v2"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert!(
        stdout(&replay).contains("verified against the live model, swapped in"),
        "{}",
        stdout(&replay)
    );
    assert_eq!(
        stdout(&replay).matches("workouts.v2: rebuilt").count(),
        1,
        "{}",
        stdout(&replay)
    );
    let dry = s.run(&["replay", "--all", "--dry-run"]);
    assert!(
        stdout(&dry).contains("WorkoutCompleted"),
        "{}",
        stdout(&dry)
    );
    let unknown = s.run(&["replay", "nothing.v1"]);
    assert!(!unknown.status.success() && stderr(&unknown).contains("unknown projection"));
    let unconfirmed = s.run(&["projections", "reset", "workouts.v2"]);
    assert!(
        !unconfirmed.status.success() && stderr(&unconfirmed).contains("--yes"),
        "{}",
        stderr(&unconfirmed)
    );
    let reset = s.run(&["projections", "reset", "workouts.v2", "--yes"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    let status = s.run(&["projections", "status", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let workouts = rows
        .as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == "workouts.v2"))
        .expect("row")
        .clone();
    assert_eq!(workouts["state"], "never_ran");
}

#[test]
fn redis_models_replay_from_the_command_line() {
    let s = Scratch::new();
    let demo = s.run(&["demo", "--users", "10"]);
    assert!(demo.status.success(), "{}", stderr(&demo));
    let redis =
        std::env::var("EVENTFOLD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("cli-test:{}:", uuid::Uuid::new_v4().simple());
    let with_redis = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(args)
            .args(["--redis-url", &redis, "--redis-prefix", &prefix])
            .env("DATABASE_URL", s.url())
            .current_dir(&s.0)
            .output()
            .expect("run eventfold")
    };
    let without = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["replay", "voice_due.v1"])
        .env("DATABASE_URL", s.url())
        .env_remove("REDIS_URL")
        .current_dir(&s.0)
        .output()
        .expect("run");
    assert!(
        !without.status.success() && stderr(&without).contains("not configured"),
        "{}",
        stderr(&without)
    );
    // No live model yet: the first build is counted, the second compared with it.
    let first = with_redis(&["replay", "voice_due.v1", "leaderboards.v2"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("keys: due:*"), "{}", stdout(&first));
    let second = with_redis(&["replay", "voice_due.v1"]);
    assert!(
        second.status.success()
            && stdout(&second).contains("verified against the live model, swapped in"),
        "{}{}",
        stdout(&second),
        stderr(&second)
    );
    let as_of = with_redis(&["replay", "leaderboards.v2", "--to", "50", "--as", "audit"]);
    assert!(
        stdout(&as_of).contains(&format!("{prefix}asof:audit:")),
        "{}",
        stdout(&as_of)
    );
    let window = with_redis(&["replay", "leaderboards.v2", "--from", "10", "--as", "wk"]);
    assert!(
        window.status.success() && stdout(&window).contains(&format!("{prefix}asof:wk:")),
        "{}{}",
        stdout(&window),
        stderr(&window)
    );
    let backwards = with_redis(&["replay", "leaderboards.v2", "--from", "60", "--to", "50"]);
    assert!(
        !backwards.status.success() && stderr(&backwards).contains("--from must be"),
        "{}",
        stderr(&backwards)
    );
    let reset = with_redis(&["projections", "reset", "voice_due.v1", "--yes"]);
    assert!(
        reset.status.success()
            && stdout(&reset).contains("keys, checkpoint and parked events deleted"),
        "{}{}",
        stdout(&reset),
        stderr(&reset)
    );
    let status = with_redis(&["projections", "status", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let voice = rows
        .as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == "voice_due.v1"))
        .expect("row")
        .clone();
    assert_eq!(voice["state"], "never_ran");
    // Clean up the namespace.
    if let Ok(client) = redis::Client::open(redis.as_str()) {
        if let Ok(mut conn) = client.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}
