//! The shell's one error type, and how an OS error is worded for an operator.

use std::io;

/// Why the shell stopped without the engine's `Stopped`, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("cannot start the disk executor: {0}")]
    Disk(String),
    #[error("engine stopped on a fatal error: {0}")]
    Fatal(String),
    #[error("engine did not stop within {0} ms of the shutdown request")]
    ShutdownTimeout(u64),
    #[error("cannot start the peer transport: {0}")]
    Peers(String),
}

/// An OS error as one lowercase phrase, without the `(os error N)` tail:
/// "address already in use", "not a directory", "permission denied".
pub fn describe_io_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_as_one_phrase() {
        let e = io::Error::from_raw_os_error(98);
        assert_eq!(describe_io_error(&e), "address already in use");
        let e = io::Error::from_raw_os_error(20);
        assert_eq!(describe_io_error(&e), "not a directory");
        let e = io::Error::other("Custom thing");
        assert_eq!(describe_io_error(&e), "custom thing");
    }
}
