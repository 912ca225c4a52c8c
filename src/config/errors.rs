//! Config errors as an operator reads them: `file:line:column: what is wrong`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::file::{FileError, Mark};

/// One problem in the config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given or found.
    pub file: PathBuf,
    /// 1-based line and column, when the problem is at a place in the file.
    pub mark: Option<Mark>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error at a place in a file.
    pub fn at(file: &Path, mark: Mark, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            mark: Some(mark),
            message: message.into(),
        }
    }

    /// An error about a whole file (unreadable, missing).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            mark: None,
            message: message.into(),
        }
    }

    pub(crate) fn from_file_error(file: &Path, e: FileError) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            mark: e.mark,
            message: e.message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mark {
            Some(m) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                m.line,
                m.column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in one load, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Sorts by file, then position, so output reads top to bottom.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            let pos = |e: &ConfigError| e.mark.map(|m| (m.line, m.column)).unwrap_or((0, 0));
            (a.file.as_path(), pos(a)).cmp(&(b.file.as_path(), pos(b)))
        });
        self
    }
}
