//! `eventfold streams …`: look at and write to the log from a terminal or a script.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use eventfold_event_log::schemas::{ExpectedVersion, NewEvent, Position, StreamId};
use eventfold_event_log::{
    AnyEventStore, EventReader, EventStore, EventWriter, ReadDirection, SubscriptionOptions,
    STREAM_END,
};
use eventfold_event_schemas::catalogue::{DOMAIN_CATEGORIES, EVENT_TYPES};

#[derive(Debug, Subcommand)]
pub(crate) enum StreamsCommand {
    /// Print one stream's events as JSON lines.
    Read(ReadArgs),
    /// Print events as JSON lines as they arrive (catch-up first). Ctrl-C stops.
    Tail(TailArgs),
    /// Append one event to a stream and print where it landed.
    Append(AppendArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The stream, e.g. `order-42`.
    stream: String,
    /// Newest first.
    #[arg(long)]
    backwards: bool,
    /// First version to read (default: the start, or the end with --backwards).
    #[arg(long)]
    from: Option<i64>,
    /// At most this many events (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Only this stream category, e.g. `order`.
    #[arg(long)]
    category: Option<String>,
    /// Start after this global position (default: from the beginning).
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    /// The stream, e.g. `order-42`.
    stream: String,
    /// Event type, e.g. `OrderPlaced`.
    #[arg(long = "type")]
    event_type: String,
    /// Event data: a JSON object.
    #[arg(long)]
    data: String,
    /// `any`, `no_stream`, `stream_exists` or a version number.
    #[arg(long, default_value = "any")]
    expected_version: String,
    /// The shape `--data` has: by default the current schema version of a type of the
    /// domain's catalogue (1 for any other type). An older version of a catalogue type
    /// is stored as it is and upcast whenever it is read.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    schema_version: Option<i32>,
}

pub(crate) async fn run(
    store: &AnyEventStore,
    command: StreamsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        StreamsCommand::Read(args) => read(store, args, out).await,
        StreamsCommand::Tail(args) => tail(store, args, out).await,
        StreamsCommand::Append(args) => append(store, args, out).await,
    }
}

async fn read(store: &AnyEventStore, args: ReadArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let stream = StreamId::new(args.stream)?;
    let (direction, from) = match (args.backwards, args.from) {
        (false, from) => (ReadDirection::Forwards, from.unwrap_or(0)),
        (true, from) => (ReadDirection::Backwards, from.unwrap_or(STREAM_END)),
    };
    let events = store
        .read_stream(&stream, direction, from, args.limit)
        .await?;
    if events.is_empty() {
        eprintln!("stream {stream} has no events in that range");
    }
    for event in events {
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
    }
    Ok(())
}

async fn tail(store: &AnyEventStore, args: TailArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if args.after < 0 {
        anyhow::bail!("--after must be >= 0");
    }
    let options = SubscriptionOptions {
        category: args.category,
        ..SubscriptionOptions::default()
    };
    let mut subscription = store.subscribe(Position(args.after), options);
    let mut printed = 0;
    while args.limit.is_none_or(|limit| printed < limit) {
        let event = tokio::select! {
            event = subscription.next() => event?,
            _ = tokio::signal::ctrl_c() => break,
        };
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

async fn append(
    store: &AnyEventStore,
    args: AppendArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let stream = StreamId::new(args.stream)?;
    let expected: ExpectedVersion = args.expected_version.parse()?;
    let data = eventfold_event_schemas::json::parse_unique(args.data.as_bytes())
        .context("--data is not valid JSON")?;
    let current = EVENT_TYPES
        .iter()
        .find(|(name, _)| *name == args.event_type)
        .map(|&(_, version)| version);
    let schema_version = args.schema_version.or(current).unwrap_or(1);
    if let Some(current) = current.filter(|&current| schema_version > current) {
        anyhow::bail!(
            "--schema-version {schema_version}: {} has schema versions 1 to {current}",
            args.event_type
        );
    }
    let event = NewEvent::new(args.event_type, data).with_schema_version(schema_version);
    // A type of the domain's catalogue must carry what its schema says: an event the
    // aggregates and read models cannot decode would stop every command on its stream
    // and be parked by every projection. Types the catalogue does not know are the
    // engine's users' own and are stored as they are, in categories of their own.
    match eventfold_event_schemas::DomainEvent::decode(
        &event.event_type,
        event.schema_version,
        &event.data,
    ) {
        Err(error) => anyhow::bail!(
            "--data is not a valid {} (schema version {}): {error}",
            event.event_type,
            event.schema_version
        ),
        // Its aggregate reads it only from the stream its ids name; anywhere else the
        // read models (keyed by those ids) would fold it and the commands never see it.
        Ok(Some(domain)) => {
            let home = domain.stream().with_context(|| {
                format!("--data names no valid stream for a {}", event.event_type)
            })?;
            if home != stream {
                anyhow::bail!(
                    "a {} with these ids belongs in stream {home}, not {stream}: elsewhere \
                     the read models would count it and the commands on {home} never see it",
                    event.event_type
                );
            }
        }
        Ok(None) if DOMAIN_CATEGORIES.contains(&stream.category()) => anyhow::bail!(
            "{stream} is a stream of the reference domain, whose aggregate does not know \
             {:?}: an event it cannot read would stop every command on the stream. Event \
             types of your own go in categories of your own (not {})",
            event.event_type,
            DOMAIN_CATEGORIES.join(", ")
        ),
        Ok(None) => {}
    }
    let id = event.event_id;
    let result = store
        .append(&stream, expected, &[event])
        .await
        .map_err(|error| {
            let unknown = error.may_have_been_stored();
            let error = anyhow::Error::new(error);
            if unknown {
                // The connection broke with the append in flight: it may have committed.
                error.context(format!(
                    "the append's outcome is unknown (event id {id}): look with `eventfold \
                     streams read {stream} --backwards --limit 1` before appending it again"
                ))
            } else {
                error
            }
        })?;
    writeln!(out, "{}", serde_json::to_string(&result)?)?;
    Ok(())
}
