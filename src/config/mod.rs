//! The topology file: one TOML file describes the whole fleet.
//!
//! Parsing keeps the byte span of every value (`raw.rs`), validation turns the
//! raw file into a checked [`Topology`] or a list of [`ConfigError`]s that
//! each name `file:line:col` (`validate.rs`). Nothing downstream ever sees an
//! unchecked value.

mod endpoint;
mod error;
mod layer2;
mod overlay;
pub mod placement;
mod public_key;
mod raw;
mod validate;
#[cfg(test)]
mod validate_tests;

pub use endpoint::parse_endpoint;
pub use error::{ConfigError, ConfigErrors};
pub use layer2::{Layer, Layer2};
pub use public_key::parse_public_key;
pub use raw::{RawTopology, schema_json};
pub use validate::{
    Auth, DEFAULT_EXPIRE_AFTER, DEFAULT_KEEPALIVE, Datapath, Network, Node, Role, Topology,
    parse_duration,
};

use std::path::{Path, PathBuf};

/// Default location of the topology file.
pub const DEFAULT_CONFIG: &str = "/etc/lvn/topology.toml";

/// Read, parse and validate a topology file.
pub fn load(path: &Path) -> Result<Topology, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(ConfigError::io(path, format!("cannot read: {e}"))))?;
    parse(path, &text)
}

/// Parse and validate topology text; `path` only labels errors.
pub fn parse(path: &Path, text: &str) -> Result<Topology, ConfigErrors> {
    let source = Source {
        path: path.to_path_buf(),
        text,
    };
    let raw: RawTopology = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigErrors::single(source.error(span, e.message().trim_end().to_string()))
    })?;
    validate::validate(&source, raw)
}

/// The file being checked, kept to turn byte spans into line and column.
pub(crate) struct Source<'a> {
    pub path: PathBuf,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError {
            file: self.path.clone(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 5), (2, 3));
        assert_eq!(line_col(t, 8), (3, 1));
    }
}
