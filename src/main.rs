//! `eventfold`: the composition root. Loads configuration, installs logging, wires the
//! crates together and runs one subcommand.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventfold_event_log::{AnyEventStore, GroupCommit};

mod app;
/// mimalloc instead of glibc's malloc: under load the voice route spent a fifth of its
/// time in malloc/free and their arena locks (measured with `perf` during
/// `bench query`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod config;
mod demo;
#[cfg(test)]
mod kafka_testing;
mod notify;
mod projections;
mod reactions;
mod relay;
mod replay;
mod serve;
mod streams;
mod upgrade;
mod worker;

/// The embedded default: a SQLite file in the working directory.
const DEFAULT_DATABASE_URL: &str = "sqlite://eventfold.db";

#[derive(Debug, Parser)]
#[command(
    name = "eventfold",
    version,
    about = "Event-sourced CQRS engine: event log, projections, read API, replay"
)]
struct Cli {
    /// Where the event log lives: postgres://… or sqlite://… (created if missing).
    /// Default: sqlite://eventfold.db (the demo uses its own fresh file).
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,

    /// Redis for the Redis read models (off when unset).
    #[arg(long, env = "REDIS_URL", global = true)]
    redis_url: Option<String>,

    /// Prefix of every Redis key Eventfold writes [default: eventfold:].
    #[arg(long, env = "EVENTFOLD_REDIS_PREFIX", global = true)]
    redis_prefix: Option<String>,

    /// ClickHouse's HTTP interface for the analytics read models (off when unset).
    #[arg(long, env = "CLICKHOUSE_URL", global = true)]
    clickhouse_url: Option<String>,

    /// The ClickHouse database the analytics live in [default: eventfold].
    #[arg(long, env = "EVENTFOLD_CLICKHOUSE_DATABASE", global = true)]
    clickhouse_database: Option<String>,

    /// Optional TOML configuration file, read by every command but `demo` and `bench`;
    /// environment variables and command-line flags override it. A file given but not
    /// readable, or not valid, is an error.
    #[arg(long, env = "EVENTFOLD_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the event log's schema.
    Migrate,
    /// Serve the HTTP API (commands and queries) and run the projectors.
    Serve,
    /// Read, tail and append to event streams.
    #[command(subcommand)]
    Streams(streams::StreamsCommand),
    /// Rebuild read models from the log: shadow build, verify, swap (or an as-of build).
    Replay(replay::ReplayArgs),
    /// Relay the log to Kafka (KAFKA_BROKERS), alone; `serve` relays too when it is set.
    Relay(relay::RelayArgs),
    /// Feed read models without the HTTP API: from the relay's Kafka topics in a
    /// consumer group (workers on other machines), or from the log.
    Project(worker::ProjectArgs),
    /// Inspect the read models.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// Show the log at work on the embedded default: concurrent writers, a live tail.
    Demo(demo::DemoArgs),
    /// Measure throughput against raw baselines.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

async fn open_store(url: &str) -> anyhow::Result<AnyEventStore> {
    AnyEventStore::open_with(url, group_commit()?)
        .await
        .with_context(|| format!("could not open the event log at {}", redact(url)))
}

/// `EVENTFOLD_GROUP_COMMIT`: `on` (the default) or `off`.
fn group_commit() -> anyhow::Result<GroupCommit> {
    match std::env::var("EVENTFOLD_GROUP_COMMIT")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("" | "on" | "true" | "1") => Ok(GroupCommit::default()),
        Some("off" | "false" | "0") => Ok(GroupCommit::off()),
        Some(other) => anyhow::bail!("EVENTFOLD_GROUP_COMMIT must be on or off, not {other:?}"),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// An error and its causes, `: `-separated, each cause said once: many errors (ours
/// and sqlx's) repeat their source in their own message, which `{:#}` would print twice.
fn chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    install_tracing();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `eventfold streams tail | head -3`: the reader has what it wanted.
        Err(error) if reader_gone(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes, without a backtrace: this is for people.
            eprintln!("error: {}", chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Standard output, where its reader going away (`eventfold streams tail | head`) is
/// told apart from every other broken pipe (a database's socket): see [`ReaderGone`].
struct Stdout(std::io::StdoutLock<'static>);

/// What a write to standard output fails with once its reader has gone.
#[derive(Debug)]
struct ReaderGone;

impl std::fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed: its reader went away")
    }
}

impl std::error::Error for ReaderGone {}

impl Stdout {
    fn gone(error: std::io::Error) -> std::io::Error {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, ReaderGone)
        } else {
            error
        }
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(Self::gone)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(Self::gone)
    }
}

/// Whether `error` is standard output's reader having gone ([`ReaderGone`]).
fn reader_gone(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<ReaderGone>())
    })
}

/// Every read model of the log at `url`, in the stores the command line configures.
/// (`redis` and `clickhouse`: URL and key prefix or database.)
async fn cli_set(
    url: &str,
    redis: (Option<&str>, &str),
    clickhouse: (Option<&str>, &str),
) -> anyhow::Result<eventfold_projections::ProjectionSet<AnyEventStore>> {
    let store = open_store(url).await?;
    Ok(projections::projection_set(store, url, redis.0, redis.1)
        .await?
        .with_clickhouse(projections::clickhouse_target(clickhouse.0, clickhouse.1)?))
}

impl Cli {
    /// Treats a global setting whose environment variable is set but empty
    /// (`DATABASE_URL=` in a compose file) as unset, as the configuration file's
    /// environment overrides do: it falls back to the file, then the default, instead
    /// of being an empty URL or an empty key prefix. An empty value given as a flag
    /// stays, and is refused where it makes no sense.
    fn unset_empty_environment(&mut self, matches: &clap::ArgMatches) {
        let from_empty_env = |id: &str, value: &Option<String>| {
            value.as_deref() == Some("")
                && matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable)
        };
        for (id, value) in [
            ("database_url", &mut self.database_url),
            ("redis_url", &mut self.redis_url),
            ("redis_prefix", &mut self.redis_prefix),
            ("clickhouse_url", &mut self.clickhouse_url),
            ("clickhouse_database", &mut self.clickhouse_database),
        ] {
            if from_empty_env(id, value) {
                *value = None;
            }
        }
        if self
            .config
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
            && matches.value_source("config") == Some(clap::parser::ValueSource::EnvVariable)
        {
            self.config = None;
        }
    }

    /// The settings every command but `demo` and `bench` runs with: the configuration
    /// file (if any), the environment over it, and the command line over both — one
    /// resolution, so that no command reads one source and ignores another.
    fn settings(&self) -> anyhow::Result<config::Config> {
        let config = config::Config::load(self.config.as_deref())?;
        Ok(self.over(config))
    }

    /// `config` with this command line's global flags (or their environment
    /// variables, which clap reads) over it.
    fn over(&self, mut config: config::Config) -> config::Config {
        let flags = [
            (&self.database_url, &mut config.database_url),
            (&self.redis_url, &mut config.redis_url),
            (&self.redis_prefix, &mut config.redis_prefix),
            (&self.clickhouse_url, &mut config.clickhouse_url),
            (&self.clickhouse_database, &mut config.clickhouse_database),
        ];
        for (flag, setting) in flags {
            if let Some(value) = flag {
                *setting = Some(value.clone());
            }
        }
        config
    }
}

async fn run() -> anyhow::Result<()> {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    cli.unset_empty_environment(&matches);
    let mut out = Stdout(std::io::stdout().lock());
    // The demo runs on its own fresh file unless told otherwise, and the benches make
    // scratch databases: neither takes the configuration file's stores.
    let config = match &cli.command {
        Command::Demo(_) | Command::Bench(_) => cli.over(config::Config::default()),
        _ => cli.settings()?,
    };
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let redis_prefix = config.redis_prefix()?;
    let redis = (config.redis_url.as_deref(), redis_prefix.as_str());
    let clickhouse = (
        config.clickhouse_url.as_deref(),
        config.clickhouse_database.as_deref().unwrap_or("eventfold"),
    );
    match cli.command {
        Command::Migrate => {
            let store = open_store(&database_url).await?;
            // `open` migrates; say what was done.
            use std::io::Write;
            writeln!(
                out,
                "event log schema is up to date ({} at {})",
                store.backend(),
                redact(&database_url)
            )?;
        }
        Command::Serve => serve::run(config, &database_url, &mut out).await?,
        Command::Relay(args) => relay::run_command(&config, &database_url, args, &mut out).await?,
        Command::Streams(command) => {
            let store = open_store(&database_url).await?;
            streams::run(&store, command, &mut out).await?;
        }
        Command::Replay(args) => {
            let store = open_store(&database_url).await?;
            let redis = projections::redis_target(redis.0, redis.1)?;
            let clickhouse = projections::clickhouse_target(clickhouse.0, clickhouse.1)?;
            replay::run(&store, &database_url, redis, clickhouse, args, &mut out).await?;
        }
        Command::Project(args) => {
            let set = cli_set(&database_url, redis, clickhouse).await?;
            worker::run(&config, set, args, &mut out).await?;
        }
        Command::Projections(command) => {
            let set = cli_set(&database_url, redis, clickhouse).await?;
            projections::run(&config, &set, command, &mut out).await?;
        }
        Command::Demo(args) => demo::run(cli.database_url.as_deref(), args, &mut out).await?,
        Command::Bench(command) => bench::run(&database_url, command, &mut out).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_flags_win_over_the_configuration_file() {
        let cli = Cli::parse_from([
            "eventfold",
            "--redis-url",
            "redis://flag",
            "--redis-prefix",
            "flag:",
            "--clickhouse-url",
            "http://flag:8123",
            "--clickhouse-database",
            "flag",
            "serve",
        ]);
        let file = config::Config {
            redis_url: Some("redis://file".into()),
            redis_prefix: Some("file:".into()),
            clickhouse_url: Some("http://file:8123".into()),
            clickhouse_database: Some("file".into()),
            ..config::Config::default()
        };
        let settings = cli.over(file);
        assert_eq!(settings.redis_url.as_deref(), Some("redis://flag"));
        assert_eq!(settings.redis_prefix.as_deref(), Some("flag:"));
        assert_eq!(settings.clickhouse_url.as_deref(), Some("http://flag:8123"));
        assert_eq!(settings.clickhouse_database.as_deref(), Some("flag"));
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        /// Says its source in its own message, as sqlx's errors do.
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "database error: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::other("unable to open database file");
        let error = anyhow::Error::new(Repeats(io)).context("could not open the event log");
        assert_eq!(
            chain(&error),
            "could not open the event log: database error: unable to open database file"
        );
        let plain = anyhow::anyhow!("no such stream").context("read failed");
        assert_eq!(chain(&plain), "read failed: no such stream");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
