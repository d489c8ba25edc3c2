//! Secrets the gateway reads when a part starts (broker and platform passwords, tokens, keys):
//! from a file or a systemd credential, never from the configuration text, and never logged.

use std::path::PathBuf;

/// Where the password comes from; read when the sink starts, never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file's first line.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

impl PasswordSource {
    /// Reads the secret (the first line, trimmed of its line ending). The error is
    /// `(where, why)` and never contains the secret.
    pub fn read_first_line(&self) -> Result<String, (String, String)> {
        let path = match self {
            Self::File(p) => p.clone(),
            Self::Credential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    (
                        format!("credential `{name}`"),
                        "$CREDENTIALS_DIRECTORY is not set (is LoadCredential= in the unit?)"
                            .to_owned(),
                    )
                })?
                .join(name),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| (path.display().to_string(), e.to_string()))?;
        Ok(text.lines().next().unwrap_or_default().to_owned())
    }
}
