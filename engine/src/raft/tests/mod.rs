//! Tests of the Raft core: a model log, a deterministic simulated cluster with fault
//! injection and invariant checks, seeded swarm runs, planted-bug detection, and scripted
//! scenarios for the individual rules.

mod cluster;
mod model_log;
mod rules;
mod sim;
