//! A problem with one configuration key: what `config` reports, and what a stage that checks
//! its own spec (the command keys, read by `auth`) reports in the same form.

use std::fmt;

/// A problem found while loading or resolving the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where: `devices[3].points.ua.address`, or the file path for a file-level problem.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
