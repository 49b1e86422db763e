//! Preshared caller tokens: read from a file, one per line, so that a rotation
//! can put the new token beside the old one, and the old one can be removed
//! once every caller sends the new one. Only SHA-256 digests are kept, behind
//! an `ArcSwap`, so that a reload never blocks a call; a presented token is
//! hashed and compared with every digest in constant time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The metadata callers send their token in. Not `authorization`: for
/// Authorize that carries the API key being checked.
pub const CALLER_TOKEN_METADATA: &str = "x-keygate-caller-token";

/// The shortest caller token accepted (`openssl rand -hex 32` makes 64 characters).
pub const MIN_TOKEN_LENGTH: usize = 16;

type TokenDigest = [u8; 32];

/// Why a token file was refused. Never holds the file's content.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the file: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error(
        "the file holds no token (one a line; blank lines and lines starting with # are skipped)"
    )]
    NoToken,
    #[error("line {line}: a token must be at least {MIN_TOKEN_LENGTH} characters")]
    TooShort { line: usize },
    #[error("line {line}: a token may hold only visible ASCII characters, without spaces")]
    NotVisibleAscii { line: usize },
}

/// The caller tokens in force and the file they come from. Clones share them.
#[derive(Clone)]
pub struct CallerTokens {
    path: Arc<PathBuf>,
    digests: Arc<ArcSwap<Vec<TokenDigest>>>,
}

impl std::fmt::Debug for CallerTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CallerTokens")
            .field("path", &self.path)
            .field("tokens", &self.digests.load().len())
            .finish()
    }
}

impl CallerTokens {
    /// Reads the tokens in `path`.
    pub fn load(path: &Path) -> Result<CallerTokens, TokenFileError> {
        let digests = read_token_file(path)?;
        Ok(CallerTokens {
            path: Arc::new(path.to_path_buf()),
            digests: Arc::new(ArcSwap::from_pointee(digests)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again and puts its tokens in force; returns how many
    /// there are. A file that cannot be read, or holds a bad line or no token,
    /// is refused, and the tokens in force stay.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let digests = read_token_file(&self.path)?;
        let count = digests.len();
        self.digests.store(Arc::new(digests));
        Ok(count)
    }

    /// Whether `presented` is one of the tokens in force.
    pub fn admits(&self, presented: &[u8]) -> bool {
        let presented: TokenDigest = Sha256::digest(presented).into();
        // Every digest is compared, so the time says nothing about which matched.
        let matched = self
            .digests
            .load()
            .iter()
            .fold(Choice::from(0), |matched, digest| {
                matched | digest.ct_eq(&presented)
            });
        matched.into()
    }
}

fn read_token_file(path: &Path) -> Result<Vec<TokenDigest>, TokenFileError> {
    let text = SecretString::from(std::fs::read_to_string(path)?);
    parse_tokens(text.expose_secret())
}

/// One token a line, surrounding whitespace trimmed; blank lines and lines
/// starting with `#` are skipped.
fn parse_tokens(text: &str) -> Result<Vec<TokenDigest>, TokenFileError> {
    let mut digests = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        let line = index + 1;
        // Visible ASCII is what gRPC metadata can carry unencoded.
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(TokenFileError::NotVisibleAscii { line });
        }
        if token.len() < MIN_TOKEN_LENGTH {
            return Err(TokenFileError::TooShort { line });
        }
        digests.push(Sha256::digest(token.as_bytes()).into());
    }
    if digests.is_empty() {
        return Err(TokenFileError::NoToken);
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_swap::ArcSwap;

    use super::{parse_tokens, CallerTokens, TokenFileError};

    const OLD: &str = "old-caller-token-0123456789";
    const NEW: &str = "new-caller-token-9876543210";

    fn tokens(text: &str) -> CallerTokens {
        CallerTokens {
            path: Arc::new("unused".into()),
            digests: Arc::new(ArcSwap::from_pointee(parse_tokens(text).unwrap())),
        }
    }

    #[test]
    fn every_token_of_the_file_is_admitted_and_nothing_else() {
        let tokens = tokens(&format!("# rotation in progress\n{OLD}\n\n  {NEW}  \r\n"));
        assert!(tokens.admits(OLD.as_bytes()));
        assert!(tokens.admits(NEW.as_bytes()));
        for wrong in [
            "",
            "old-caller-token-012345678",
            "old-caller-token-01234567890",
            "# rotation in progress",
        ] {
            assert!(!tokens.admits(wrong.as_bytes()), "{wrong:?} was admitted");
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_line_not_the_token() {
        let cases: &[(&str, &str)] = &[
            ("", "no token"),
            ("# only a comment\n\n", "no token"),
            (
                &format!("{OLD}\nshort\n"),
                "line 2: a token must be at least 16",
            ),
            (
                &format!("{OLD}\nhas a-space-inside-it\n"),
                "line 2: a token may hold only visible ASCII",
            ),
            (
                "tøken-with-non-ascii-1234",
                "line 1: a token may hold only visible ASCII",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_tokens(text).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(
                !message.contains("short") && !message.contains(OLD),
                "{message}"
            );
            assert!(!matches!(error, TokenFileError::Unreadable(_)));
        }
    }

    #[test]
    fn debug_shows_the_path_and_count_only() {
        let shown = format!("{:?}", tokens(OLD));
        assert!(!shown.contains(OLD), "{shown}");
        assert!(shown.contains("tokens: 1"), "{shown}");
    }
}
