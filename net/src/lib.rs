//! gregor-net: the tokio shell that drives one engine.
