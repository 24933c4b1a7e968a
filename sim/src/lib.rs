//! gregor-sim: the deterministic simulator.
