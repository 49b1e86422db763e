//! Identifier text kept inside a cache entry rather than in a heap string of
//! its own: a decision copies the key's id and organization id into every
//! answer, and with many keys cached a separate allocation is one more cache
//! miss per request.

use std::fmt;

use uuid::Uuid;

use crate::token::KeyId;

/// The longest text held: a hyphenated UUID.
const CAPACITY: usize = 36;

/// A short ASCII identifier (a key id or an organization id) held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdText {
    bytes: [u8; CAPACITY],
    len: u8,
}

impl IdText {
    /// A key id as the API spells it (22 base62 digits).
    pub fn of_key(id: &KeyId) -> IdText {
        IdText::new(&id.to_string()).unwrap_or_default()
    }

    /// A UUID, hyphenated.
    pub fn of_uuid(id: &Uuid) -> IdText {
        IdText::new(id.hyphenated().encode_lower(&mut Uuid::encode_buffer())).unwrap_or_default()
    }

    /// `None` for text longer than a hyphenated UUID or not ASCII.
    fn new(text: &str) -> Option<IdText> {
        if text.len() > CAPACITY || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; CAPACITY];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(IdText {
            bytes,
            len: text.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Built from a whole `&str` of ASCII, so any prefix is valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Default for IdText {
    /// The empty text.
    fn default() -> IdText {
        IdText {
            bytes: [0; CAPACITY],
            len: 0,
        }
    }
}

impl fmt::Debug for IdText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_key_ids_and_uuids_as_the_api_does() {
        let key = KeyId::generate();
        assert_eq!(IdText::of_key(&key).as_str(), key.to_string());
        let uuid = Uuid::new_v4();
        assert_eq!(IdText::of_uuid(&uuid).as_str(), uuid.to_string());
    }

    #[test]
    fn holds_ids_up_to_a_hyphenated_uuid() {
        let uuid = uuid::Uuid::new_v4().to_string();
        assert_eq!(IdText::new(&uuid).unwrap().as_str(), uuid);
        assert_eq!(IdText::new("").unwrap().as_str(), "");
        assert_eq!(IdText::new("4Wq0x").unwrap().as_str(), "4Wq0x");
        assert!(IdText::new(&format!("{uuid}x")).is_none());
        assert!(IdText::new("é").is_none());
    }
}
