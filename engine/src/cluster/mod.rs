//! Cluster metadata: the records of the `__cluster_metadata` Raft log, the image every
//! broker builds from them, and the controller's replica placement.
pub mod assign;
pub mod image;
pub mod records;

pub use image::{ClusterImage, ImageChange};
pub use records::{MetaRecord, NodeId};
