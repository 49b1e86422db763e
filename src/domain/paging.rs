//! Page sizes and opaque page tokens for the List RPCs.
//!
//! A token encodes the listing it belongs to and the sequence number of the last
//! row returned; rows are listed newest first, so the next page starts below it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::key::FieldError;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// `0` means the default; negative or above 1000 is refused.
pub fn parse_page_size(page_size: i32) -> Result<i64, FieldError> {
    match i64::from(page_size) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if (1..=MAX_PAGE_SIZE).contains(&size) => Ok(size),
        _ => Err(FieldError::new(
            "page_size",
            format!("must be between 0 and {MAX_PAGE_SIZE}"),
        )),
    }
}

/// Reads a page token of listing `kind`; `None` for the first page.
pub fn parse_page_token(kind: &str, token: &str) -> Result<Option<i64>, FieldError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || FieldError::new("page_token", "is not a token returned by this listing");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (token_kind, sequence) = text.split_once(':').ok_or_else(invalid)?;
    if token_kind != kind {
        return Err(invalid());
    }
    let sequence: i64 = sequence.parse().map_err(|_| invalid())?;
    if sequence < 1 {
        return Err(invalid());
    }
    Ok(Some(sequence))
}

pub fn page_token(kind: &str, last_sequence: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{last_sequence}"))
}

/// Splits a fetch of `page_size + 1` rows into the page and the next page token.
pub fn into_page<T>(kind: &str, mut rows: Vec<(i64, T)>, page_size: i64) -> (Vec<T>, String) {
    let has_more = rows.len() as i64 > page_size;
    rows.truncate(page_size as usize);
    let next_token = match (has_more, rows.last()) {
        (true, Some((sequence, _))) => page_token(kind, *sequence),
        _ => String::new(),
    };
    (rows.into_iter().map(|(_, row)| row).collect(), next_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(parse_page_size(0).unwrap(), 50);
        assert_eq!(parse_page_size(1000).unwrap(), 1000);
        assert_eq!(parse_page_size(-1).unwrap_err().field, "page_size");
        assert_eq!(parse_page_size(1001).unwrap_err().field, "page_size");
    }

    #[test]
    fn tokens_round_trip_and_junk_is_refused() {
        assert_eq!(
            parse_page_token("keys", &page_token("keys", 42)).unwrap(),
            Some(42)
        );
        assert_eq!(parse_page_token("keys", "").unwrap(), None);
        for bad in [
            "junk!",
            "a2V5czp4",
            &page_token("events", 42),
            &page_token("keys", 0),
        ] {
            assert_eq!(
                parse_page_token("keys", bad).unwrap_err().field,
                "page_token",
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_split_off_the_extra_row() {
        let rows = vec![(5, 'a'), (4, 'b'), (3, 'c')];
        let (page, next) = into_page("keys", rows, 2);
        assert_eq!(page, vec!['a', 'b']);
        assert_eq!(parse_page_token("keys", &next).unwrap(), Some(4));
        let (page, next) = into_page("keys", vec![(1, 'z')], 2);
        assert_eq!(page, vec!['z']);
        assert!(next.is_empty());
    }
}
