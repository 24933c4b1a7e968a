//! gregor-jepsen: the history model and checker that judge what Kafka clients saw
//! (shared with the simulator), and — with the `harness` feature — a harness that runs a
//! real Gregor cluster in network namespaces, breaks it, and records a history.

pub mod checker;
pub mod history;

#[cfg(feature = "harness")]
pub mod cluster;
#[cfg(feature = "harness")]
pub mod kafka;
#[cfg(feature = "harness")]
pub mod nemesis;
#[cfg(feature = "harness")]
pub mod plot;
#[cfg(feature = "harness")]
pub mod recorder;
#[cfg(feature = "harness")]
pub mod run;
#[cfg(feature = "harness")]
pub mod workload;
