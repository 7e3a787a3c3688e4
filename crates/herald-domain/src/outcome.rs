//! What one attempt came to. Failing to reach a receiver is data, not an error.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer within the timeout.
    Delivered {
        code: u16,
    },
    /// Any other HTTP status.
    Status {
        code: u16,
    },
    Timeout,
    Connect,
    Dns,
    Tls,
    /// The target address is not allowed (private network outside dev mode).
    Blocked,
}

/// The `error_kind` recorded for an attempt that got no HTTP answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    Connect,
    Dns,
    Tls,
    Blocked,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Timeout,
            Self::Connect,
            Self::Dns,
            Self::Tls,
            Self::Blocked,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl AttemptOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }

    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Delivered { code } | Self::Status { code } => Some(*code),
            _ => None,
        }
    }

    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Delivered { .. } | Self::Status { .. } => None,
            Self::Timeout => Some(ErrorKind::Timeout),
            Self::Connect => Some(ErrorKind::Connect),
            Self::Dns => Some(ErrorKind::Dns),
            Self::Tls => Some(ErrorKind::Tls),
            Self::Blocked => Some(ErrorKind::Blocked),
        }
    }
}
