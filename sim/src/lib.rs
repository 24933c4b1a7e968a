//! gregor-sim: the deterministic simulator. One seed drives one broker engine, or a cluster
//! of 3 or 5 (`--nodes`) over a simulated peer network, against simulated disks, clocks and
//! Kafka clients with seeded faults, records what the clients saw, and checks it.
//!
//! Modules: [`swarm`] (what each seed chooses), [`runner`] (the event loop and the
//! nemesis), [`disk`], [`clock`], [`net`] (the peer network and its nemesis), [`client`] +
//! [`wire`] (simulated Kafka clients), [`group_client`] + [`group_check`] (group consumers
//! and the group invariants), [`history`], [`check`] (end-of-run checker),
//! [`jepsen_history`] (the same history judged by `gregor_jepsen`'s queue checker),
//! [`invariants`] (per-step Raft invariants), [`trace`] (the determinism hash).

pub mod check;
pub mod client;
pub mod clock;
pub mod disk;
pub mod group_check;
pub mod group_client;
pub mod history;
pub mod invariants;
pub mod jepsen_history;
pub mod net;
pub mod runner;
pub mod swarm;
pub mod trace;
pub mod wire;

pub use runner::{run_seed, RunResult};
pub use swarm::{Planted, RunSettings, SwarmOptions};
