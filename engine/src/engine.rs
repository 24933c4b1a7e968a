//! The engine's top level: routes inputs to partitions and the Kafka layer.
use crate::{BrokerConfig, Input, Output, Time};

/// The broker state machine.
pub struct Engine {
    config: BrokerConfig,
}

impl Engine {
    pub fn new(config: BrokerConfig) -> Engine {
        Engine { config }
    }

    /// Feeds one input; appends the outputs it causes to `out`.
    pub fn step(&mut self, now: Time, input: Input, out: &mut Vec<Output>) {
        let _ = (now, input, out, &self.config);
    }
}
