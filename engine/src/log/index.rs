//! Sparse offset and time indexes. (Being written; see issue 3.)
