//! Bad input: a clear message and a non-zero exit, nothing written, nothing left running.

use super::*;

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
    ended_within(&mut child, 60, "the load generator of a 1 s run still ran");
    let out = child.wait_with_output().expect("its output");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("a JSON report");
    assert_eq!(report["ok"], 0, "{report}");
    // Every request due was either never sent or never answered.
    assert_eq!(report["errors"], 1_000_000, "{report}");
}

/// `bench relay` against brokers that do not answer stops with their address and the
/// error instead of waiting (the relay retries brokers without end; the bench waited
/// with it, and its scratch databases stayed behind when it was killed).
#[test]
fn the_relay_bench_names_brokers_that_do_not_answer() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let log = s.0.join("bench.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfold"))
        .args([
            "bench",
            "relay",
            "--postgres",
            &eventfold_event_log::testing::admin_url(),
            "--brokers",
            &brokers,
            "--events",
            "1",
        ])
        .current_dir(&s.0)
        .stdout(std::process::Stdio::null())
        // A file, not a pipe: librdkafka logs every failed connection there, and a
        // pipe nobody reads meanwhile fills and stops the bench.
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("start the bench");
    ended_within(
        &mut child,
        90,
        &format!("bench relay still waited for {brokers}"),
    );
    let status = child.wait().expect("its status");
    let text = std::fs::read_to_string(&log).expect("its log");
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!("the brokers at {brokers} did not answer")),
        "{text}"
    );
}
