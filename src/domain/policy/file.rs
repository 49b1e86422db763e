//! The policy file as written: its YAML shape, read with the line of every key
//! and list item so that each error can point at the line to fix.
//!
//! A key written twice in one mapping is refused, never merged: with "the last
//! one wins", `customers: [read, write]` followed by `customers: [read]` would
//! quietly drop `write`, and two `GET /a` rows in one route item would leave
//! only the second.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, Spanned, UserMessageFormatter};

use crate::domain::quoted::Quoted;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    pub catalog: CatalogFile,
    /// One `METHOD /path: permission` entry per item.
    #[serde(default)]
    pub routes: Vec<Entries<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogFile {
    /// Resource path -> the actions it offers.
    pub resources: Entries<Vec<Item>>,
    /// Action -> the actions it implies.
    #[serde(default)]
    pub implications: Entries<Vec<Item>>,
    /// Preset name -> its scopes.
    #[serde(default)]
    pub presets: Entries<Vec<Item>>,
}

/// A list item with its line.
pub(super) type Item = Spanned<String>;

/// The text and the line of a list item.
pub(super) fn item(item: &Item) -> (&str, u64) {
    (&item.value, item.referenced.line())
}

/// A mapping's entries in file order, each key with its line; a key given twice
/// is an error.
pub(super) struct Entries<Value>(pub Vec<Entry<Value>>);

pub(super) struct Entry<Value> {
    pub key: String,
    pub line: u64,
    pub value: Value,
}

impl<Value> Default for Entries<Value> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, Value: Deserialize<'de>> Deserialize<'de> for Entries<Value> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

struct EntriesVisitor<Value>(PhantomData<Value>);

impl<'de, Value: Deserialize<'de>> Visitor<'de> for EntriesVisitor<Value> {
    type Value = Entries<Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a mapping")
    }

    fn visit_map<Map: MapAccess<'de>>(self, mut map: Map) -> Result<Entries<Value>, Map::Error> {
        let mut first_lines = BTreeMap::new();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let line = key.referenced.line();
            // The parser refuses duplicates too; this keeps the rule if its
            // options ever change.
            if let Some(first_line) = first_lines.insert(key.value.clone(), line) {
                return Err(de::Error::custom(format!(
                    "duplicate key {} (first at line {first_line})",
                    Quoted(&key.value)
                )));
            }
            let value = map.next_value()?;
            entries.push(Entry {
                key: key.value,
                line,
                value,
            });
        }
        Ok(Entries(entries))
    }
}

/// Reads the policy's YAML; the error is one line naming the line at fault.
pub(super) fn read(text: &str) -> Result<PolicyFile, String> {
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::Error,
        merge_keys: MergeKeyPolicy::Error,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let options = serde_saphyr::render_options! {
            formatter: &UserMessageFormatter,
            snippets: serde_saphyr::SnippetMode::Off,
        };
        error.render_with_options(options).replace('\n', " ")
    })
}
