//! The library's one error type.
//!
//! An [`Error`] carries a [`ErrorKind`] (what went wrong, in terms a caller can act on) and a
//! human message with its context (which channel, which key). The mapping from kind to HTTP
//! status lives in one place: [`ErrorKind::http_status`]. `anyhow` is used only at the
//! binary's edge (`main.rs`).

use std::fmt;

/// What went wrong, coarse enough to choose an HTTP status or an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request syntax (bad JSON, bad query).
    BadRequest,
    /// Missing or wrong token.
    Unauthorized,
    /// Authenticated but not allowed (e.g. an API-supplied command when those are disabled).
    Forbidden,
    /// No such channel or route.
    NotFound,
    /// The resource already exists (duplicate id).
    Conflict,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// Too many failed attempts from this client: wait before trying again.
    TooManyRequests,
    /// The body is not JSON.
    UnsupportedMediaType,
    /// Well-formed input that fails validation.
    Invalid,
    /// The configuration could not be loaded or is invalid.
    Config,
    /// A dependency (source, engine) is not available right now.
    Unavailable,
    /// A bug or an unexpected I/O failure.
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind. The only place this mapping exists.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Invalid => 422,
            ErrorKind::Config => 422,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The short machine-readable name used as the `error` field of JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Config => "invalid_config",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error with its kind and a message that says where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// Individual problems, for errors that collect several (validation).
    details: Vec<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// An error that lists several problems (each one line, each naming its key).
    pub fn with_details(kind: ErrorKind, message: impl Into<String>, details: Vec<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            details,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn details(&self) -> &[String] {
        &self.details
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, what)
    }

    pub fn invalid(what: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, what)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_details_one_per_line() {
        let e = Error::with_details(
            ErrorKind::Config,
            "config.yaml: 2 errors",
            vec!["a: bad".into(), "b: worse".into()],
        );
        assert_eq!(e.to_string(), "config.yaml: 2 errors\n  a: bad\n  b: worse");
        assert_eq!(e.kind().http_status(), 422);
    }
}
