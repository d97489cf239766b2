//! Diagnostics that point at a file, line and column.

use std::fmt;

/// Severity of a [`Diagnostic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy is rejected.
    Error,
    /// The policy loads, but something deserves attention.
    Warning,
}

/// One message about a policy file, located at `file:line:column` (1-based).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead, when there is something useful to say.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COL: error: MESSAGE` and, when present, an indented `help:` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, sev, self.message
        )?;
        if let Some(help) = &self.help {
            for (i, l) in help.lines().enumerate() {
                if i == 0 {
                    write!(f, "\n  help: {l}")?;
                } else {
                    write!(f, "\n        {l}")?;
                }
            }
        }
        Ok(())
    }
}

/// Loading failed. Carries every error found (not just the first), plus the warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// The file could not be read.
    Io {
        /// The path as given.
        file: String,
        /// The OS error, as text.
        message: String,
    },
    /// The file was read but is not a valid policy.
    Invalid {
        /// Every error, in file order.
        errors: Vec<Diagnostic>,
        /// Warnings found along the way (also worth showing).
        warnings: Vec<Diagnostic>,
    },
}

impl PolicyError {
    /// The error diagnostics (empty for I/O errors).
    pub fn errors(&self) -> &[Diagnostic] {
        match self {
            PolicyError::Io { .. } => &[],
            PolicyError::Invalid { errors, .. } => errors,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Io { file, message } => write!(f, "{file}: cannot read policy: {message}"),
            PolicyError::Invalid { errors, .. } => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PolicyError {}
