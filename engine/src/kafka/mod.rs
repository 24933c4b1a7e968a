//! The Kafka wire layer: the only module that sees `kafka-protocol` types.
