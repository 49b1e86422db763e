//! Identifier text kept inside a cache entry rather than in a heap string of
//! its own: a decision copies the key's id and organization id into every
//! answer, and with many keys cached a separate allocation is one more cache
//! miss per request.

use std::fmt;

use uuid::Uuid;

use crate::domain::token::{KeyId, KEY_ID_LEN};

/// The longest text held: a hyphenated UUID.
const CAPACITY: usize = 36;

const _: () = assert!(KEY_ID_LEN <= CAPACITY);

/// A key id or an organization id, as the API spells it, held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdText {
    bytes: [u8; CAPACITY],
    len: u8,
}

impl IdText {
    /// A key id: always `KEY_ID_LEN` base62 digits.
    pub fn of_key(id: &KeyId) -> IdText {
        IdText::copied(&id.to_string())
    }

    /// A UUID, hyphenated and lowercase: always 36 characters.
    pub fn of_uuid(id: &Uuid) -> IdText {
        let mut buffer = Uuid::encode_buffer();
        IdText::copied(id.hyphenated().encode_lower(&mut buffer))
    }

    /// Holds `text`, which both constructors guarantee to be ASCII and to fit.
    fn copied(text: &str) -> IdText {
        debug_assert!(text.len() <= CAPACITY && text.is_ascii());
        let len = text.len().min(CAPACITY);
        let mut bytes = [0u8; CAPACITY];
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        IdText {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        // ASCII, so valid UTF-8: checking 22 to 36 bytes costs a few
        // nanoseconds and keeps this free of `unsafe`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Default for IdText {
    /// The empty text (a system key's organization id).
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
        let key = KeyId::from_uuid(Uuid::max());
        assert_eq!(IdText::of_key(&key).as_str(), "7n42DGM5Tflk9n8mt7Fhc7");
        let uuid = Uuid::parse_str("67E55044-10B1-426F-9247-BB680E5FE0C8").unwrap();
        assert_eq!(
            IdText::of_uuid(&uuid).as_str(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        let random = KeyId::generate();
        assert_eq!(IdText::of_key(&random).as_str(), random.to_string());
        assert_eq!(IdText::default().as_str(), "");
    }
}
