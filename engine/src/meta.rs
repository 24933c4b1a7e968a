//! Durable topic metadata.
