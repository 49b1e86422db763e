//! How a message quotes a refused value: escaped as `{:?}` would, but cut to a
//! short excerpt followed by the value's length. Every error that echoes input
//! goes through [`Quoted`], so a huge bad value cannot make a huge reply: gRPC
//! clients refuse status messages beyond their 16 KB metadata limit, and would
//! see RESOURCE_EXHAUSTED instead of the INVALID_ARGUMENT naming the field.

use std::fmt;

/// The most bytes of escaped text a message quotes from one value.
pub const MAX_QUOTED_BYTES: usize = 64;

/// `"abc"` for a short value; `"abc…" (1048576 bytes)` for a long one.
#[derive(Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut excerpt = String::with_capacity(MAX_QUOTED_BYTES);
        let mut buffer = [0; 4];
        for character in self.0.chars() {
            // One character at a time, so that the cut never splits an escape.
            let escaped = format!("{:?}", &*character.encode_utf8(&mut buffer));
            let inner = escaped
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or(&escaped);
            if excerpt.len() + inner.len() > MAX_QUOTED_BYTES {
                return write!(formatter, "\"{excerpt}…\" ({} bytes)", self.0.len());
            }
            excerpt.push_str(inner);
        }
        write!(formatter, "\"{excerpt}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_as_debug_quotes_them() {
        for value in [
            "",
            "widgets",
            "10.0.0.1/8",
            "tab\there",
            "quote\"d",
            "é🔑",
            "\u{7f}",
        ] {
            assert_eq!(Quoted(value).to_string(), format!("{value:?}"));
        }
        let fits = "a".repeat(MAX_QUOTED_BYTES);
        assert_eq!(Quoted(&fits).to_string(), format!("{fits:?}"));
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "a".repeat(1 << 20);
        let expected = format!("\"{}…\" (1048576 bytes)", "a".repeat(MAX_QUOTED_BYTES));
        assert_eq!(Quoted(&long).to_string(), expected);
    }

    #[test]
    fn escapes_count_against_the_limit() {
        let deletes = "\u{7f}".repeat(1 << 20);
        let quoted = Quoted(&deletes).to_string();
        assert!(quoted.len() < 100, "{quoted}");
        assert!(quoted.starts_with("\"\\u{7f}"), "{quoted}");
        assert!(quoted.ends_with("…\" (1048576 bytes)"), "{quoted}");
    }
}
