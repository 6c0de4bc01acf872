//! The `eventfold` binary, run as a user would (root package integration test): the
//! streams, the configuration file and the demo here; bad input in `bad_input`; the
//! read models (Kafka-fed workers, replay, reset) in `models`.

mod bad_input;
mod models;

use std::path::PathBuf;
use std::process::{Command, Output};

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("eventfold-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("log.db").display())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(args)
            .env("DATABASE_URL", self.url())
            .current_dir(&self.0)
            .output()
            .expect("run eventfold")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits for `child` to end, for at most `seconds`: past them it is killed and the test
/// fails with `what` (a process that never ends is what these tests look for).
fn ended_within(child: &mut std::process::Child, seconds: u64, what: &str) {
    let started = std::time::Instant::now();
    while child.try_wait().expect("its status").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(seconds) {
            let _ = child.kill();
            panic!("{what} after {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// (Types of the user's own: the domain's catalogue types must match their schemas,
/// see `bad_input_exits_non_zero_with_a_clear_message`.)
#[test]
fn appended_events_can_be_read_and_tailed() {
    let s = Scratch::new();
    let appended = s.run(&[
        "streams",
        "append",
        "note-1",
        "--type",
        "NoteDrafted",
        "--data",
        r#"{"sku":"caps"}"#,
    ]);
    assert!(appended.status.success(), "{}", stderr(&appended));
    assert!(
        stdout(&appended).contains(r#""last_version":0"#),
        "{}",
        stdout(&appended)
    );
    let second = s.run(&[
        "streams",
        "append",
        "note-1",
        "--type",
        "NoteFiled",
        "--data",
        "{}",
        "--expected-version",
        "0",
    ]);
    assert!(second.status.success(), "{}", stderr(&second));

    let read = s.run(&["streams", "read", "note-1"]);
    assert!(read.status.success(), "{}", stderr(&read));
    let lines: Vec<serde_json::Value> = stdout(&read)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_type"], "NoteDrafted");
    assert_eq!(lines[0]["data"]["sku"], "caps");

    let backwards = s.run(&["streams", "read", "note-1", "--backwards", "--limit", "1"]);
    assert!(stdout(&backwards).contains("NoteFiled"));

    let tail = s.run(&["streams", "tail", "--category", "note", "--limit", "2"]);
    assert!(tail.status.success(), "{}", stderr(&tail));
    assert_eq!(stdout(&tail).lines().count(), 2);
}

/// `eventfold streams tail | head -1`: once the reader has gone, the command ends
/// quietly with success (before: "error: Broken pipe (os error 32)" and exit 1), and
/// a tail without an end stops instead of waiting for events nobody will read.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let s = Scratch::new();
    for n in 0..3 {
        let appended = s.run(&[
            "streams",
            "append",
            "note-1",
            "--type",
            "NoteDrafted",
            "--data",
            &format!(r#"{{"n":{n}}}"#),
        ]);
        assert!(appended.status.success(), "{}", stderr(&appended));
    }
    for args in [&["streams", "read", "note-1"][..], &["streams", "tail"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(args)
            .env("DATABASE_URL", s.url())
            .current_dir(&s.0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run eventfold");
        // The reader goes away before the first line.
        drop(child.stdout.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} went on after its reader had gone");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("output");
        assert!(status.success(), "{args:?}: {status} {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

/// A type of the domain's catalogue is appended in its current shape by default, and in
/// an older one when `--schema-version` says so (it was appended at version 1 whatever
/// its current version: a `PurchaseRecorded` could only be written in its old shape).
#[test]
fn catalogue_events_are_appended_at_their_current_schema_version() {
    let s = Scratch::new();
    let current = s.run(&[
        "streams",
        "append",
        "purchases-u1",
        "--type",
        "PurchaseRecorded",
        "--data",
        r#"{"user_id":"u1","sku":"S","title":"T","category":"c","quantity":1,"unit_price":250,"currency":"EUR","purchased_at":"2026-01-01T00:00:00Z"}"#,
    ]);
    assert!(current.status.success(), "{}", stderr(&current));
    let older = s.run(&[
        "streams",
        "append",
        "purchases-u1",
        "--type",
        "PurchaseRecorded",
        "--schema-version",
        "1",
        "--data",
        r#"{"user_id":"u1","sku":"S","title":"T","category":"c","quantity":1,"price":2.5,"purchased_at":"2026-01-01T00:00:00Z"}"#,
    ]);
    assert!(older.status.success(), "{}", stderr(&older));
    let beyond = s.run(&[
        "streams",
        "append",
        "purchases-u1",
        "--type",
        "PurchaseRecorded",
        "--schema-version",
        "1",
        "--data",
        r#"{"user_id":"u1","sku":"S","title":"T","category":"c","quantity":1,"price":1e300,"purchased_at":"2026-01-01T00:00:00Z"}"#,
    ]);
    assert!(!beyond.status.success());
    assert!(
        stderr(&beyond).contains("beyond what minor units can hold"),
        "{}",
        stderr(&beyond)
    );

    let read = s.run(&["streams", "read", "purchases-u1"]);
    let versions: Vec<i64> = stdout(&read)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .map(|event| event["schema_version"].as_i64().expect("a schema version"))
        .collect();
    assert_eq!(versions, [2, 1]);
}

/// Every command reads the configuration file, and reads it the same way: its stores
/// are used unless the environment or a flag says otherwise (before, only `serve`,
/// `relay` and `project` read it — `replay` and `projections` ran against the default
/// database, silently — and `serve` let the file win over `--database-url`). A file
/// given but missing or invalid is an error, whatever the command.
#[test]
fn every_command_takes_its_stores_from_the_configuration_file() {
    let s = Scratch::new();
    let config = s.0.join("eventfold.toml");
    let from_file = s.0.join("from-file.db");
    std::fs::write(
        &config,
        format!("database_url = \"sqlite://{}\"\n", from_file.display()),
    )
    .expect("config file");
    let config = config.display().to_string();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("EVENTFOLD_CONFIG")
            .current_dir(&s.0)
            .output()
            .expect("run eventfold")
    };
    let appended = run(&[
        "--config",
        &config,
        "streams",
        "append",
        "note-1",
        "--type",
        "NoteDrafted",
        "--data",
        r#"{"sku":"caps"}"#,
    ]);
    assert!(appended.status.success(), "{}", stderr(&appended));
    assert!(from_file.exists(), "the file's database was not used");
    assert!(
        !s.0.join("eventfold.db").exists(),
        "the default database was used"
    );
    for args in [
        &["streams", "read", "note-1"][..],
        &["projections", "status"],
        &["replay", "reminders.v1"],
    ] {
        let out = run(&[&["--config", config.as_str()][..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            !s.0.join("eventfold.db").exists(),
            "{args:?} used the default database"
        );
    }
    let read = run(&["--config", &config, "streams", "read", "note-1"]);
    assert!(stdout(&read).contains("NoteDrafted"), "{}", stdout(&read));
    // An environment variable set but empty is unset: the file's database is used, and
    // the default key prefix (not an empty one, which is refused).
    let empty_env = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["--config", &config, "streams", "read", "note-1"])
        .env("DATABASE_URL", "")
        .env("EVENTFOLD_REDIS_PREFIX", "")
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env_remove("EVENTFOLD_CONFIG")
        .current_dir(&s.0)
        .output()
        .expect("run eventfold");
    assert!(empty_env.status.success(), "{}", stderr(&empty_env));
    assert!(
        stdout(&empty_env).contains("NoteDrafted"),
        "{}",
        stdout(&empty_env)
    );
    // A flag wins over the file.
    let flagged = s.0.join("flag.db");
    let url = format!("sqlite://{}", flagged.display());
    let out = run(&["--config", &config, "--database-url", &url, "migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(flagged.exists(), "--database-url lost to the file");
    // A file that is not there, or not valid, stops every command.
    std::fs::write(s.0.join("bad.toml"), "database_urll = 1\n").expect("bad file");
    for file in ["missing.toml", "bad.toml"] {
        for args in [&["migrate"][..], &["projections", "status"], &["serve"]] {
            let out = run(&[&["--config", file][..], args].concat());
            assert!(!out.status.success(), "{file} {args:?} ran");
            let err = stderr(&out);
            assert!(err.contains(file), "{file} {args:?}: {err}");
        }
    }
}

#[test]
fn the_demo_runs_on_the_embedded_default() {
    let s = Scratch::new();
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["demo", "--users", "30"])
        .env_remove("DATABASE_URL")
        .current_dir(&s.0)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("no second order"), "{text}");
    assert!(text.contains("payment push requested: true"), "{text}");
    assert!(text.contains("consumables detected"), "{text}");
    assert!(s.0.join("eventfold-demo.db").exists());
}

/// A bench interrupted (SIGTERM here; Ctrl-C alike) removes the scratch databases it
/// made before it exits. They used to stay on the server: a 1M-event log is hundreds of
/// megabytes.
#[test]
fn an_interrupted_bench_removes_its_scratch_databases() {
    let s = Scratch::new();
    let admin = eventfold_event_log::testing::admin_url();
    let log = s.0.join("bench.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args([
            "bench",
            "project",
            "--postgres",
            &admin,
            "--events",
            "5000000",
        ])
        .current_dir(&s.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("start the bench");
    let prefix = format!("eventfold_bench_{}_", child.id());
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let databases = || {
        runtime
            .block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)",
                )
                .bind(&prefix)
                .fetch_one(&mut conn)
                .await
            })
            .expect("the server's databases")
    };
    let started = std::time::Instant::now();
    while databases() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no scratch database after 60 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Into the prefill of its log.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    ended_within(&mut child, 60, "the bench still ran after SIGTERM");
    let text = std::fs::read_to_string(&log).expect("its log");
    assert!(!child.wait().expect("its status").success(), "{text}");
    assert_eq!(databases(), 0, "{text}");
    assert!(
        text.contains("interrupted; 1 scratch store(s) of this run removed"),
        "{text}"
    );
}
