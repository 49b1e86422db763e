//! The parts of a token (`kg_<env>_<key id><secret><checksum>`), and tokens
//! made up by the test.

use keygate::domain::token::{Environment, KeyId, Token, TokenPrefix};
use keygate::domain::token::{CHECKSUM_LEN, KEY_ID_LEN, SECRET_LEN};
use secrecy::ExposeSecret;

/// A well-formed live token (valid checksum) for `key_id` with a new secret:
/// someone else's secret for that key, or a key id nobody issued.
pub fn token_for(key_id: &KeyId) -> String {
    let issued = Token::issue(&TokenPrefix::default(), Environment::Live, key_id);
    issued.token.expose_secret().to_owned()
}

/// The secret part of a token (what is hashed): the 43 characters before the
/// checksum. A leak check looks for this, not the whole token.
pub fn secret_of(token: &str) -> &str {
    let end = token.len() - CHECKSUM_LEN;
    &token[end - SECRET_LEN..end]
}

/// The key id part of a token (the 22 characters after `kg_<env>_`).
pub fn key_id_of(token: &str) -> String {
    let start = "kg_live_".len();
    token[start..start + KEY_ID_LEN].to_owned()
}
