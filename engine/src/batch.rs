//! Record batches (magic 2): a zero-copy view over the 61-byte header, validation, and
//! the few header edits a leader makes. (Being written; see issue 3.)
