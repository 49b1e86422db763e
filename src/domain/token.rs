//! The token a client holds: `<prefix>_<env>_<key id><secret><checksum>`.
//!
//! - `prefix`: configurable, `kg` by default; lowercase letters and digits.
//! - `env`: `live` or `test`.
//! - `key id`: 22 base62 characters, the public 128-bit id that indexes the row.
//! - `secret`: 43 base62 characters, 256 bits from the OS CSPRNG.
//! - `checksum`: 6 base62 characters, the CRC32 of everything before it, so that
//!   typos and random strings are refused before any lookup.
//!
//! A token is shown once and never stored; only an argon2id hash of its secret is.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::SecretString;
use uuid::Uuid;

use crate::domain::quoted::Quoted;

/// Length of the key id part.
pub const KEY_ID_LEN: usize = 22;
/// Length of the secret part.
pub const SECRET_LEN: usize = 43;
/// Length of the checksum part.
pub const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;
const SECRET_BYTES: usize = 32;
// Never change the alphabet or its order: every issued token and key id depends on it.
const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed token. Messages never echo the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token does not start with the expected prefix")]
    WrongPrefix,
    #[error("token names an unknown environment")]
    UnknownEnvironment,
    #[error("token has the wrong length")]
    WrongLength,
    #[error("token contains characters outside [0-9A-Za-z]")]
    BadAlphabet,
    #[error("token checksum does not match")]
    BadChecksum,
}

/// The environment a key acts in; spelled inside the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Environment> {
        match text {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The public id of a key: a random UUID, written as 22 base62 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Uuid);

impl KeyId {
    pub fn generate() -> KeyId {
        KeyId(Uuid::new_v4())
    }

    pub fn from_uuid(uuid: Uuid) -> KeyId {
        KeyId(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Parses the 22-character base62 form.
    pub fn parse(text: &str) -> Option<KeyId> {
        if text.len() != KEY_ID_LEN {
            return None;
        }
        let value = decode_base62_u128(text.as_bytes())?;
        Some(KeyId(Uuid::from_u128(value)))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoded = encode_base62(&self.0.as_u128().to_be_bytes(), KEY_ID_LEN);
        formatter.write_str(&encoded)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "KeyId({self})")
    }
}

/// The configured token prefix (`kg` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrefix(String);

impl TokenPrefix {
    /// 2 to 16 characters: a lowercase letter, then lowercase letters or digits.
    pub fn parse(text: &str) -> Result<TokenPrefix, String> {
        let mut characters = text.chars();
        let starts_with_letter = characters.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_is_valid = characters.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(2..=16).contains(&text.len()) || !starts_with_letter || !rest_is_valid {
            return Err(format!(
                "token prefix {} must be 2 to 16 characters: a lowercase letter, then lowercase letters or digits",
                Quoted(text)
            ));
        }
        Ok(TokenPrefix(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hint shown for a key: prefix, environment and the first 4 characters of the id.
    pub fn display_hint(&self, environment: Environment, key_id: &KeyId) -> String {
        let id_text = key_id.to_string();
        format!("{}_{}_{}", self.0, environment, &id_text[..4])
    }
}

impl Default for TokenPrefix {
    fn default() -> Self {
        TokenPrefix("kg".to_owned())
    }
}

/// A well-formed token, split into its parts; borrows the presented string, so
/// parsing allocates nothing. Only the secret is sensitive.
pub struct Token<'a> {
    environment: Environment,
    key_id: KeyId,
    secret: &'a str,
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Token")
            .field("environment", &self.environment)
            .field("key_id", &self.key_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A freshly generated token: the whole string to hand out once, and its secret part to hash.
pub struct IssuedToken {
    pub token: SecretString,
    pub secret: SecretString,
}

impl<'a> Token<'a> {
    /// Generates a token for `key_id` with 256 bits of secret from the OS CSPRNG.
    pub fn issue(prefix: &TokenPrefix, environment: Environment, key_id: &KeyId) -> IssuedToken {
        let mut secret_bytes = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut secret_bytes);
        let secret = encode_base62(&secret_bytes, SECRET_LEN);
        let mut token = format!("{}_{}_{}{}", prefix.0, environment, key_id, secret);
        let checksum = crc32fast::hash(token.as_bytes());
        token.push_str(&encode_base62(&checksum.to_be_bytes(), CHECKSUM_LEN));
        IssuedToken {
            token: SecretString::from(token),
            secret: SecretString::from(secret),
        }
    }

    /// Checks the token's shape and checksum. Does no I/O.
    pub fn parse(raw: &'a str, prefix: &TokenPrefix) -> Result<Token<'a>, TokenError> {
        let Some(after_prefix) = raw
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
        else {
            return Err(TokenError::WrongPrefix);
        };
        let Some((environment_text, body)) = after_prefix.split_once('_') else {
            return Err(TokenError::UnknownEnvironment);
        };
        let Some(environment) = Environment::parse(environment_text) else {
            return Err(TokenError::UnknownEnvironment);
        };
        if body.len() != BODY_LEN {
            return Err(TokenError::WrongLength);
        }
        // Folded without an early exit, so the check compiles to vector code.
        let alphanumeric = body
            .bytes()
            .fold(true, |valid, byte| valid & byte.is_ascii_alphanumeric());
        if !alphanumeric {
            return Err(TokenError::BadAlphabet);
        }
        let checksum_start = raw.len() - CHECKSUM_LEN;
        let expected_checksum = crc32fast::hash(&raw.as_bytes()[..checksum_start]);
        let Some(presented_checksum) = decode_base62_u128(&raw.as_bytes()[checksum_start..]) else {
            return Err(TokenError::BadChecksum);
        };
        if presented_checksum != u128::from(expected_checksum) {
            return Err(TokenError::BadChecksum);
        }
        let Some(key_id) = KeyId::parse(&body[..KEY_ID_LEN]) else {
            return Err(TokenError::BadChecksum);
        };
        Ok(Token {
            environment,
            key_id,
            secret: &body[KEY_ID_LEN..KEY_ID_LEN + SECRET_LEN],
        })
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The secret part. Handle with care: never log or format it.
    pub fn secret(&self) -> &'a str {
        self.secret
    }
}

/// The regex a secret scanner can use to find tokens with `prefix`.
pub fn scanner_regex(prefix: &TokenPrefix) -> String {
    format!(
        r"\b{}_(?:live|test)_[0-9A-Za-z]{{{BODY_LEN}}}\b",
        prefix.as_str()
    )
}

/// Writes a big-endian number as exactly `width` base62 digits (leading zeros kept).
fn encode_base62(big_endian: &[u8], width: usize) -> String {
    let mut number = big_endian.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let accumulator = (remainder << 8) | u32::from(*byte);
            *byte = (accumulator / 62) as u8;
            remainder = accumulator % 62;
        }
        *slot = BASE62_ALPHABET[remainder as usize];
    }
    digits.into_iter().map(char::from).collect()
}

/// The value of one base62 digit.
fn base62_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'Z' => Some(digit - b'A' + 10),
        b'a'..=b'z' => Some(digit - b'a' + 36),
        _ => None,
    }
}

/// Most base62 digits whose value always fits in a u64 (62^10 < 2^64).
const DIGITS_PER_U64: usize = 10;

/// Reads base62 digits into a number; `None` on a bad digit or overflow.
/// Every Authorize parses two such numbers, so digits are gathered ten at a
/// time in a u64 and only the chunks are combined in (slower) u128 arithmetic.
fn decode_base62_u128(digits: &[u8]) -> Option<u128> {
    let mut number: u128 = 0;
    for chunk in digits.chunks(DIGITS_PER_U64) {
        let mut part: u64 = 0;
        for &digit in chunk {
            part = part * 62 + u64::from(base62_digit(digit)?);
        }
        // chunk.len() <= 10, and 62^10 fits in a u128 with room to spare.
        let scale = 62u128.pow(chunk.len() as u32);
        number = number.checked_mul(scale)?.checked_add(u128::from(part))?;
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn issue_live() -> (String, KeyId) {
        let key_id = KeyId::generate();
        let issued = Token::issue(&TokenPrefix::default(), Environment::Live, &key_id);
        (issued.token.expose_secret().to_owned(), key_id)
    }

    #[test]
    fn issued_token_round_trips() {
        let (raw, key_id) = issue_live();
        assert_eq!(raw.len(), "kg_live_".len() + 71);
        let token = Token::parse(&raw, &TokenPrefix::default()).unwrap();
        assert_eq!(token.key_id(), &key_id);
        assert_eq!(token.environment(), Environment::Live);
        assert_eq!(token.secret().len(), SECRET_LEN);
    }

    #[test]
    fn issued_token_matches_scanner_regex_shape() {
        let (raw, _) = issue_live();
        let body = &raw["kg_live_".len()..];
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(scanner_regex(&TokenPrefix::default()).contains("{71}"));
    }

    #[test]
    fn key_id_round_trips_and_keeps_leading_zeros() {
        for value in [0u128, 1, 61, 62, u128::MAX] {
            let key_id = KeyId::from_uuid(Uuid::from_u128(value));
            let text = key_id.to_string();
            assert_eq!(text.len(), KEY_ID_LEN);
            assert_eq!(KeyId::parse(&text), Some(key_id));
        }
        assert_eq!(KeyId::from_uuid(Uuid::nil()).to_string(), "0".repeat(22));
    }

    #[test]
    fn chunked_decoding_matches_digit_by_digit_decoding() {
        let reference = |digits: &[u8]| {
            digits.iter().try_fold(0u128, |number, &digit| {
                number
                    .checked_mul(62)?
                    .checked_add(u128::from(base62_digit(digit)?))
            })
        };
        let mut inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"z".to_vec(),
            b"zzzzzzzzzz".to_vec(),
            b"zzzzzzzzzzz".to_vec(),
            "z".repeat(22).into_bytes(),
            b"0000000000000000000001".to_vec(),
            b"abc-def".to_vec(),
        ];
        for _ in 0..2_000 {
            let length = (rand::random::<u8>() % 24) as usize;
            inputs.push(
                (0..length)
                    .map(|_| BASE62_ALPHABET[(rand::random::<u8>() % 62) as usize])
                    .collect(),
            );
        }
        for digits in inputs {
            assert_eq!(
                decode_base62_u128(&digits),
                reference(&digits),
                "{digits:?}"
            );
        }
        // u128::MAX is the largest id; one more overflows.
        assert_eq!(
            decode_base62_u128(b"7n42DGM5Tflk9n8mt7Fhc7"),
            Some(u128::MAX)
        );
        assert_eq!(decode_base62_u128(b"7n42DGM5Tflk9n8mt7Fhc8"), None);
    }

    #[test]
    fn key_id_rejects_overflow_and_bad_characters() {
        assert_eq!(KeyId::parse(&"z".repeat(22)), None);
        assert_eq!(KeyId::parse(&"-".repeat(22)), None);
        assert_eq!(KeyId::parse("short"), None);
    }

    #[test]
    fn malformed_tokens_are_refused_with_their_reason() {
        let (raw, _) = issue_live();
        let prefix = TokenPrefix::default();
        let cases: Vec<(String, TokenError)> = vec![
            (raw.replacen("kg_", "xx_", 1), TokenError::WrongPrefix),
            (raw.replacen("kg_", "kg", 1), TokenError::WrongPrefix),
            (String::new(), TokenError::WrongPrefix),
            (
                raw.replacen("_live_", "_prod_", 1),
                TokenError::UnknownEnvironment,
            ),
            (raw[..raw.len() - 1].to_owned(), TokenError::WrongLength),
            (format!("{raw}0"), TokenError::WrongLength),
            (
                format!("{}-{}", &raw[..20], &raw[21..]),
                TokenError::BadAlphabet,
            ),
            (
                format!("{}é{}", &raw[..20], &raw[22..]),
                TokenError::BadAlphabet,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Token::parse(&input, &prefix).err(),
                Some(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let (raw, _) = issue_live();
        let mut bytes = raw.clone().into_bytes();
        let position = 30;
        bytes[position] = if bytes[position] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            Token::parse(&altered, &TokenPrefix::default()).err(),
            Some(TokenError::BadChecksum)
        );
    }

    #[test]
    fn other_prefixes_are_respected() {
        let prefix = TokenPrefix::parse("pcx").unwrap();
        let issued = Token::issue(&prefix, Environment::Test, &KeyId::generate());
        let raw = issued.token.expose_secret();
        assert!(raw.starts_with("pcx_test_"));
        assert!(Token::parse(raw, &prefix).is_ok());
        assert_eq!(
            Token::parse(raw, &TokenPrefix::default()).err(),
            Some(TokenError::WrongPrefix)
        );
    }

    #[test]
    fn prefix_rules() {
        for bad in ["", "k", "Kg", "1kg", "kg_", "k-g", "abcdefghijklmnopq"] {
            assert!(TokenPrefix::parse(bad).is_err(), "{bad}");
        }
        for good in ["kg", "sk", "pcx2", "abcdefghijklmnop"] {
            assert!(TokenPrefix::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let (raw, _) = issue_live();
        let token = Token::parse(&raw, &TokenPrefix::default()).unwrap();
        assert!(!format!("{token:?}").contains(token.secret()));
    }

    #[test]
    fn display_hint_is_prefix_env_and_four_id_characters() {
        let key_id = KeyId::generate();
        let hint = TokenPrefix::default().display_hint(Environment::Test, &key_id);
        assert_eq!(hint, format!("kg_test_{}", &key_id.to_string()[..4]));
    }
}
