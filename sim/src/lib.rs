//! gregor-sim: the deterministic simulator. One seed drives a broker engine (today one node;
//! the structure grows to N engines and a network) against a simulated disk, clock and
//! Kafka clients with seeded faults, records what the clients saw, and checks it.
//!
//! Modules: [`swarm`] (what each seed chooses), [`runner`] (the event loop and the
//! nemesis), [`disk`], [`clock`], [`client`] + [`wire`] (simulated Kafka clients),
//! [`history`], [`check`] (end-of-run checker), [`trace`] (the determinism hash).

pub mod check;
pub mod client;
pub mod clock;
pub mod disk;
pub mod history;
pub mod net;
pub mod runner;
pub mod swarm;
pub mod trace;
pub mod wire;

pub use runner::{run_seed, RunResult};
pub use swarm::{Planted, RunSettings, SwarmOptions};
