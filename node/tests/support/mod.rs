//! Helpers for the real-process cluster tests: [`cluster`] runs `gregor` processes on
//! loopback, [`kafka`] talks to them.

pub mod cluster;
pub mod kafka;
