//! What the Kafka tests share: the brokers they run against (librdkafka's mock
//! cluster, a tansu of their own, `KAFKA_BROKERS`) and a relay runner.

use std::time::Duration;

use eventfold_event_log::PgEventStore;
use eventfold_projections::{
    FailPoint, PoisonPolicy, ReadDb, Runner, RunnerOptions, Sink, StatusBoard,
};
use rdkafka::mocking::MockCluster;

use crate::relay::{KafkaSettings, Relay};

/// The categories the tests' topics are made for (the mock cluster cannot create them).
pub(crate) const CATEGORIES: [&str; 3] = ["order", "workout", "reminder"];

/// The broker a test talks to: librdkafka's mock cluster, a tansu of the test's own
/// on a free port, or the one `KAFKA_BROKERS` names.
pub(crate) enum Broker {
    Mock(
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        String,
    ),
    Tansu(OwnTansu, String),
    External(String, String),
}

impl Broker {
    pub(crate) fn mock() -> Self {
        Self::Mock(MockCluster::new(3).expect("mock cluster"), unique_prefix())
    }

    pub(crate) fn tansu() -> Self {
        Self::Tansu(OwnTansu::start(), unique_prefix())
    }

    pub(crate) fn external() -> Option<Self> {
        let brokers = std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.is_empty());
        if brokers.is_none() {
            eprintln!("KAFKA_BROKERS unset: nothing to run against");
        }
        brokers.map(|b| Self::External(b, unique_prefix()))
    }

    pub(crate) fn bootstrap(&self) -> String {
        match self {
            Self::Mock(cluster, _) => cluster.bootstrap_servers(),
            Self::Tansu(tansu, _) => format!("127.0.0.1:{}", tansu.port),
            Self::External(brokers, _) => brokers.clone(),
        }
    }

    /// The relay's settings, its topics under a prefix of the test's own (the mock
    /// cluster cannot create topics: they are made here).
    pub(crate) fn settings(&self, partitions: i32) -> KafkaSettings {
        let prefix = match self {
            Self::Mock(cluster, prefix) => {
                for category in CATEGORIES {
                    cluster
                        .create_topic(&format!("{prefix}{category}"), partitions, 1)
                        .expect("topic");
                }
                prefix
            }
            Self::Tansu(_, prefix) | Self::External(_, prefix) => prefix,
        };
        KafkaSettings::new(
            self.bootstrap(),
            Some(prefix.clone()),
            Some(partitions),
            None,
        )
        .expect("settings")
    }
}

pub(crate) fn unique_prefix() -> String {
    format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `tansu broker` with memory storage on a free port, killed when dropped. The
/// binary: `EVENTFOLD_TANSU`, or where `scripts/setup` puts it.
pub(crate) struct OwnTansu {
    child: std::process::Child,
    port: u16,
}

impl OwnTansu {
    pub(crate) fn start() -> Self {
        let binary = std::env::var("EVENTFOLD_TANSU")
            .unwrap_or_else(|_| "/var/tmp/eventfold-tansu".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e} (scripts/setup installs tansu)"));
        let tansu = Self { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return tansu;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not listen on {port}");
    }
}

impl Drop for OwnTansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn relay_runner(
    store: &PgEventStore,
    settings: &KafkaSettings,
    read: &ReadDb,
    backoff: Duration,
) -> (Runner<PgEventStore, Relay>, FailPoint) {
    let board = StatusBoard::default();
    let relay = Relay::new(settings.clone(), read.pool().clone(), board.clone()).expect("relay");
    let fail_point = relay.fail_point();
    let options = RunnerOptions {
        batch_size: 5_000,
        backoff,
        poison: PoisonPolicy::Skip,
        ..RunnerOptions::default()
    };
    (
        Runner::new(store.clone(), relay, options, board),
        fail_point,
    )
}
