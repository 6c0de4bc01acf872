//! The `eventfold` binary, run as a user would (root package integration test).

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

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let s = Scratch::new();
    let long_label = "a".repeat(25);
    let cases: [(&[&str], &str); 22] = [
        (
            &[
                "--redis-url",
                "redis://127.0.0.1:99999",
                "projections",
                "status",
            ],
            "is not a Redis URL",
        ),
        (
            &[
                "streams",
                "append",
                "no category",
                "--type",
                "T",
                "--data",
                "{}",
            ],
            "stream id",
        ),
        (
            &[
                "streams", "append", "note-1", "--type", "T", "--data", "[1]",
            ],
            "JSON object",
        ),
        (
            &[
                "streams", "append", "note-1", "--type", "T", "--data", "{oops",
            ],
            "not valid JSON",
        ),
        (
            &[
                "streams",
                "append",
                "note-1",
                "--type",
                "T",
                "--data",
                "{}",
                "--expected-version",
                "latest",
            ],
            "expected version",
        ),
        (
            &[
                "streams",
                "append",
                "note-1",
                "--type",
                "T",
                "--data",
                "{}",
                "--expected-version",
                "3",
            ],
            "is at version no_stream",
        ),
        (
            &["streams", "tail", "--category", "Bad-One", "--limit", "1"],
            "not a valid stream category",
        ),
        (
            &[
                "streams",
                "append",
                "note-1",
                "--type",
                "T",
                "--data",
                r#"{"a":1,"a":2}"#,
            ],
            r#"the key "a" is repeated"#,
        ),
        // A NUL no backend may store (SQLite used to keep it, PostgreSQL answered
        // "database error: unsupported Unicode escape sequence").
        (
            &[
                "streams",
                "append",
                "note-1",
                "--type",
                "T",
                "--data",
                r#"{"a":"x\u0000y"}"#,
            ],
            "NUL character",
        ),
        // A type of the domain's catalogue with data its schema does not describe: it
        // used to be stored, and every command on the stream answered 503 after.
        (
            &[
                "streams",
                "append",
                "purchases-u1",
                "--type",
                "PurchaseRecorded",
                "--data",
                r#"{"x":1}"#,
            ],
            "--data is not a valid PurchaseRecorded (schema version 2)",
        ),
        (
            &[
                "streams",
                "append",
                "purchases-u1",
                "--type",
                "PurchaseRecorded",
                "--data",
                r#"{"user_id":"u1","sku":"S","title":"T","category":"c","quantity":-1,"unit_price":1,"currency":"RUB","purchased_at":"2026-01-01T00:00:00Z"}"#,
            ],
            "not a valid PurchaseRecorded",
        ),
        // An event of the domain in a stream its ids do not name: the read models (keyed
        // by the ids) would fold it, the aggregate of purchases-u1 would never see it.
        (
            &[
                "streams",
                "append",
                "purchases-u2",
                "--type",
                "PurchaseRecorded",
                "--data",
                r#"{"user_id":"u1","sku":"S","title":"T","category":"c","quantity":1,"unit_price":250,"currency":"EUR","purchased_at":"2026-01-01T00:00:00Z"}"#,
            ],
            "belongs in stream purchases-u1, not purchases-u2",
        ),
        // A type of one's own in a stream of the domain: it was stored, and every command
        // on the workout answered 500 `unreadable_stream` from then on.
        (
            &[
                "streams",
                "append",
                "workout-7f3c0a4e-1111-4222-8333-944455556666",
                "--type",
                "SomethingElse",
                "--data",
                "{}",
            ],
            "is a stream of the reference domain, whose aggregate does not know \"SomethingElse\"",
        ),
        // A schema version the catalogue does not have yet, or none at all.
        (
            &[
                "streams",
                "append",
                "purchases-u1",
                "--type",
                "PurchaseRecorded",
                "--data",
                "{}",
                "--schema-version",
                "3",
            ],
            "--schema-version 3: PurchaseRecorded has schema versions 1 to 2",
        ),
        (
            &[
                "streams",
                "append",
                "note-1",
                "--type",
                "T",
                "--data",
                "{}",
                "--schema-version",
                "0",
            ],
            "--schema-version",
        ),
        // An as-of label becomes part of table names and Redis keys: refused, not
        // rewritten (`a-b` used to become `ab`, and a long one was cut to 63 bytes).
        (
            &["replay", "workouts.v2", "--to", "0", "--as", "a-b"],
            "as-of label \"a-b\" must be 1 to 24 ASCII letters",
        ),
        (
            &["replay", "workouts.v2", "--to", "0", "--as", &long_label],
            "as-of label",
        ),
        (
            &["replay", "workouts.v2", "--to", "0", "--as", ""],
            "as-of label",
        ),
        (
            &["replay", "workouts.v2", "--to", "9223372036854775807"],
            "is beyond the log's head",
        ),
        // Without a window the rebuild would replace the live model: `--as` is a mistake.
        (
            &["replay", "workouts.v2", "--as", "audit"],
            "--as names an as-of build",
        ),
        // The load generator's server and route, checked before a request goes out
        // (each used to fail every request and report it as the server's errors).
        (
            &[
                "bench",
                "load",
                "--base",
                "notaurl",
                "--users",
                "1",
                "--rate",
                "1",
                "--duration",
                "1s",
            ],
            "is not a server's address",
        ),
        (
            &[
                "bench",
                "load",
                "--base",
                "http://127.0.0.1:1",
                "--users",
                "1",
                "--rate",
                "1",
                "--duration",
                "1s",
                "--path",
                "api",
            ],
            "is not a route's path",
        ),
    ];
    for (args, message) in cases {
        let out = s.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    for stream in [
        "note-1",
        "purchases-u1",
        "purchases-u2",
        "workout-7f3c0a4e-1111-4222-8333-944455556666",
    ] {
        let read = s.run(&["streams", "read", stream]);
        assert!(
            stdout(&read).is_empty(),
            "bad input must write nothing: {stream}"
        );
    }
}

#[test]
fn an_unsupported_database_url_is_reported() {
    let s = Scratch::new();
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["migrate"])
        .env("DATABASE_URL", "mysql://localhost/x")
        .current_dir(&s.0)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unsupported database URL"),
        "{}",
        stderr(&out)
    );
}

/// A PostgreSQL that does not answer is named with its own error (after the wait a
/// server still starting gets), not as sqlx's "pool timed out".
#[test]
fn an_unreachable_postgres_is_reported_with_its_own_error() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args(["projections", "status"])
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x?sslmode=disable"),
        )
        .current_dir(&s.0)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("pool timed out"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
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

/// Settings that would quietly do harm stop `serve` before it listens: an empty JWT
/// secret in the file (tokens anyone can sign) and a route retention of 0 months (it
/// would not turn retention off, as `0` does for limits, but drop every past month).
#[test]
fn serve_refuses_settings_that_would_quietly_do_harm() {
    let s = Scratch::new();
    let file = s.0.join("eventfold.toml");
    std::fs::write(&file, "jwt_secret = \"\"\n").expect("write the file");
    let file = file.display().to_string();
    let empty_prefix = s.0.join("empty-prefix.toml");
    std::fs::write(&empty_prefix, "redis_prefix = \"\"\n").expect("write the file");
    let empty_prefix = empty_prefix.display().to_string();
    // (arguments, environment, what stderr says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        (&["--config", &file, "serve"], &[], "jwt_secret is empty"),
        // Every key Eventfold scans and deletes begins with the prefix: an empty one
        // would reach other applications' keys.
        (
            &["--config", &empty_prefix, "serve"],
            &[("REDIS_URL", "redis://127.0.0.1:6379")],
            "EVENTFOLD_REDIS_PREFIX",
        ),
        (
            &[
                "--redis-prefix",
                "",
                "projections",
                "reset",
                "voice_due.v1",
                "--yes",
            ],
            &[("REDIS_URL", "redis://127.0.0.1:6379")],
            "EVENTFOLD_REDIS_PREFIX",
        ),
        (
            &["serve"],
            &[("EVENTFOLD_ROUTE_RETENTION_MONTHS", "0")],
            "must be 1 or more",
        ),
    ];
    for (args, env, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_eventfold"))
            .args(args)
            .envs(env.iter().copied())
            .env("DATABASE_URL", s.url())
            .env("EVENTFOLD_LISTEN", "127.0.0.1:0")
            .current_dir(&s.0)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} {env:?} should fail");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains("listening on"), "{}", stdout(&out));
    }
}

/// `bench load` against a server that accepts connections and never answers, at a rate
/// far above anything served: it ends once twice its duration has passed and counts
/// every request not answered by then as an error. It used to wait forever, a task per
/// request due piling up behind the busy connections (~200 MB a second).
#[test]
fn the_load_generator_ends_in_time_against_a_server_that_never_answers() {
    let s = Scratch::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args([
            "bench",
            "load",
            "--base",
            &format!("http://127.0.0.1:{port}"),
            "--users",
            "1",
            "--rate",
            "1000000",
            "--duration",
            "1s",
        ])
        .current_dir(&s.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the load generator");
    let started = std::time::Instant::now();
    while child.try_wait().expect("its status").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the load generator still ran after 60 s of a 1 s run");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("its output");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("a JSON report");
    assert_eq!(report["ok"], 0, "{report}");
    // Every request due was either never sent or never answered.
    assert_eq!(report["errors"], 1_000_000, "{report}");
}
