//! The layering `src/lib.rs` describes holds: a module names only the modules
//! below it (no cycle), and generated proto types stay in the gRPC layer and
//! the admin CLI, its client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure there is a failed test"
)]

use std::path::{Path, PathBuf};

/// The top-level modules, top to bottom. A module may name any module listed
/// after it; `cli` and `grpc` share a level, and the CLI is a client of grpc.
const LAYERS: [&str; 11] = [
    "commands",
    "server",
    "cli",
    "grpc",
    "lifecycle",
    "replication",
    "authorizer",
    "freshness",
    "cache",
    "store",
    "domain",
];

fn source_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(source: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(source).unwrap();
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_str().unwrap();
    name.trim_end_matches(".rs").to_owned()
}

/// The code of a file without comments and without its unit tests (which
/// may reach wherever a test needs to).
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    if file.file_name().is_some_and(|name| name == "tests.rs") {
        return String::new();
    }
    let without_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    without_tests
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<module>` a piece of code names.
fn named_modules(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .map(|(at, prefix)| {
            code[at + prefix.len()..]
                .chars()
                .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&source, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let module = module_of(&source, file);
        let Some(level) = LAYERS.iter().position(|layer| *layer == module) else {
            assert!(
                ["lib", "main"].contains(&module.as_str()),
                "{}: a top-level module missing from LAYERS",
                file.display()
            );
            continue;
        };
        for named in named_modules(&code_of(file)) {
            let Some(named_level) = LAYERS.iter().position(|layer| *layer == named) else {
                continue;
            };
            if named_level < level {
                upward.push(format!("{}: {module} names {named}", file.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "arrows pointing up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn generated_types_stay_in_grpc_and_the_cli() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&source, &mut files);
    let mut outside = Vec::new();
    for file in &files {
        let module = module_of(&source, file);
        if module == "grpc" || module == "cli" {
            continue;
        }
        if code_of(file).contains("grpc::pb") {
            outside.push(file.display().to_string());
        }
    }
    assert!(outside.is_empty(), "generated types named in {outside:?}");
}

#[test]
fn the_checks_see_an_upward_arrow() {
    let code = "use crate::server::config::Settings;\n// crate::cli in a comment\n";
    assert_eq!(named_modules(code), ["server", "cli"]);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain/token.rs");
    assert!(!code_of(&file).is_empty());
}
