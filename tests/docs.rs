//! The documentation names only what exists: every `--flag` in README.md and
//! docs/ is accepted by the `keygate` command it is given to, every
//! `KEYGATE_*` variable is read somewhere, every `keygate_…` metric or
//! channel name is a string in the source, every RPC is declared in the proto
//! files, every source path exists, and every link between the documents
//! leads to a file and heading that exist.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test reports a failure by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The verbs KeyService's RPCs start with: a CamelCase word starting with one
/// of them must name an RPC or a message.
const RPC_VERBS: [&str; 9] = [
    "Create", "Get", "List", "Update", "Rotate", "Disable", "Enable", "Revoke", "Delete",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// README.md and every Markdown file in docs/, by path relative to the root.
fn documents() -> BTreeMap<String, String> {
    let mut documents = BTreeMap::new();
    documents.insert("README.md".to_owned(), read(&root().join("README.md")));
    let docs = root().join("docs");
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
            documents.insert(name, read(&path));
        }
    }
    assert!(documents.len() > 1, "no documents under docs/");
    documents
}

/// The text of every file under `dir` whose name ends with `extension`.
fn sources(dir: &Path, extension: &str) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(extension) {
                let text = read(&path);
                found.push((path, text));
            }
        }
    }
    found
}

/// `keygate <args> --help`, which must succeed.
fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .arg("--help")
        .env_remove("KEYGATE_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "keygate {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The subcommands a help text lists under `Commands:` (`help` left out).
fn subcommands(help_text: &str) -> Vec<String> {
    help_text
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every `keygate` command path (`[]`, `["serve"]`, `["keys", "create"]`, …)
/// with its help text.
fn command_helps() -> BTreeMap<Vec<String>, String> {
    let mut helps = BTreeMap::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for name in subcommands(&text) {
            let mut child = path.clone();
            child.push(name);
            pending.push(child);
        }
        helps.insert(path, text);
    }
    assert!(
        helps.contains_key(&vec!["serve".to_owned()]),
        "no serve command"
    );
    helps
}

/// Whether `flag` (`--name`) is among the options `help_text` lists.
fn help_lists(help_text: &str, flag: &str) -> bool {
    help_text
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|word| {
            word == flag
                || word
                    .strip_prefix(flag)
                    .is_some_and(|rest| rest.starts_with(['=', '<', '[']))
        })
}

/// The `--flags` in `text`: `--` at the start of a word, then a lowercase
/// letter and more lowercase letters, digits or hyphens.
fn flags_in(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(offset) = text[index..].find("--") {
        let start = index + offset;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let name: String = text[start + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if word_start && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.push(format!("--{}", name.trim_end_matches('-')));
        }
        index = start + 2 + name.len();
    }
    flags
}

/// The longest runs of characters for which `is_part` holds.
fn words(text: &str, is_part: impl Fn(char) -> bool) -> Vec<&str> {
    text.split(|c: char| !is_part(c))
        .filter(|word| !word.is_empty())
        .collect()
}

/// A document's code block lines (continued lines joined), and its inline
/// code spans outside code blocks.
fn code_and_spans(text: &str) -> (Vec<String>, Vec<String>) {
    let joined = text.replace("\\\n", " ");
    let mut in_code = false;
    let mut code = Vec::new();
    let mut prose = String::new();
    for line in joined.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            code.push(line.to_owned());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let spans = prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.replace('\n', " "))
        .collect();
    (code, spans)
}

/// Where a document mentions a `keygate` command line or a flag: the command
/// path it is given to (`None`: any command) and the flags.
struct FlagMention {
    document: String,
    command: Option<Vec<String>>,
    flags: Vec<String>,
    text: String,
}

/// The command path a `keygate …` line names, and the rest of the line.
fn command_line<'a>(
    helps: &BTreeMap<Vec<String>, String>,
    line: &'a str,
) -> Option<(Vec<String>, &'a str)> {
    let after_cargo = line
        .find("cargo run --release -- ")
        .map(|at| &line[at + "cargo run --release -- ".len()..]);
    let rest = match after_cargo {
        Some(rest) => rest,
        None => line.trim_start().strip_prefix("keygate ")?,
    };
    let mut path = Vec::new();
    let mut remaining = rest;
    loop {
        let trimmed = remaining.trim_start();
        let word = trimmed.split_whitespace().next().unwrap_or_default();
        let mut child = path.clone();
        child.push(word.to_owned());
        if word.is_empty() || !helps.contains_key(&child) {
            return Some((path, trimmed));
        }
        path = child;
        remaining = &trimmed[word.len()..];
    }
}

/// Every flag mention in the documents: command lines in code blocks and in
/// backticks are checked against their command; a backticked flag on its own
/// (`--listen`, `--output json`) against every command.
fn flag_mentions(
    documents: &BTreeMap<String, String>,
    helps: &BTreeMap<Vec<String>, String>,
) -> Vec<FlagMention> {
    let mut mentions = Vec::new();
    for (document, text) in documents {
        let (code, spans) = code_and_spans(text);
        for line in code {
            let without_comment = line.split(" #").next().unwrap_or_default();
            if let Some((command, rest)) = command_line(helps, without_comment) {
                mentions.push(FlagMention {
                    document: document.clone(),
                    command: Some(command),
                    flags: flags_in(rest),
                    text: line.clone(),
                });
            }
        }
        for span in spans {
            let command = if span.trim_start().starts_with("--") {
                None
            } else if let Some((command, _)) = command_line(helps, &span) {
                Some(command)
            } else {
                continue;
            };
            mentions.push(FlagMention {
                document: document.clone(),
                command,
                flags: flags_in(&span),
                text: span,
            });
        }
    }
    mentions
}

#[test]
fn every_documented_flag_is_accepted_by_its_command() {
    let documents = documents();
    let helps = command_helps();
    let mentions = flag_mentions(&documents, &helps);
    let documented: BTreeSet<&String> = mentions.iter().flat_map(|m| &m.flags).collect();
    assert!(
        documented.contains(&"--propagation-timeout-ms".to_owned())
            && documented.contains(&"--grace-period".to_owned()),
        "the flag scan found too little: {documented:?}"
    );
    let mut unknown = Vec::new();
    for mention in &mentions {
        for flag in &mention.flags {
            let known = match &mention.command {
                Some(command) => help_lists(&helps[command], flag),
                None => helps.values().any(|text| help_lists(text, flag)),
            };
            if !known {
                let command = mention
                    .command
                    .as_ref()
                    .map_or("any command".to_owned(), |path| {
                        format!("keygate {}", path.join(" "))
                    });
                unknown.push(format!(
                    "{}: {flag} is not an option of {command} (in `{}`)",
                    mention.document,
                    mention.text.trim()
                ));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
}

#[test]
fn every_documented_variable_is_read() {
    let helps = command_helps();
    // Tests read a few of their own (documented in development.md).
    let code: Vec<(PathBuf, String)> = sources(&root().join("src"), ".rs")
        .into_iter()
        .chain(sources(&root().join("benches"), ".rs"))
        .chain(sources(&root().join("tests"), ".rs"))
        .collect();
    let mut unknown = BTreeSet::new();
    for (document, text) in documents() {
        for word in words(&text, |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
        }) {
            let Some(name) = word.strip_prefix("KEYGATE_") else {
                continue;
            };
            let variable = format!("KEYGATE_{}", name.trim_end_matches('_'));
            if variable == "KEYGATE_" {
                continue;
            }
            let in_help = helps.values().any(|help| {
                help.contains(&format!("env: {variable}="))
                    || help.contains(&format!("env: {variable}]"))
            });
            let in_code = code
                .iter()
                .any(|(_, source)| source.contains(&format!("\"{variable}\"")));
            if !in_help && !in_code {
                unknown.insert(format!("{document}: {variable}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "variables no command reads: {unknown:?}"
    );
}

#[test]
fn every_documented_metric_and_channel_is_in_the_source() {
    let code = sources(&root().join("src"), ".rs");
    let mut checked = 0;
    let mut unknown = BTreeSet::new();
    for (document, text) in documents() {
        let names = words(&text, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
        });
        for word in names {
            if !word.starts_with("keygate_") {
                continue;
            }
            let name = word.trim_end_matches('_');
            // A histogram's series carry suffixes the source never spells.
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            if name == "keygate" {
                continue;
            }
            checked += 1;
            let literal = format!("\"{name}\"");
            if !code.iter().any(|(_, source)| source.contains(&literal)) {
                unknown.insert(format!("{document}: {name}"));
            }
        }
    }
    assert!(checked > 10, "the metric scan found too little");
    assert!(unknown.is_empty(), "not a string in src/: {unknown:?}");
}

/// RPCs by service, and every service and message name, from the proto files.
fn proto_names() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut rpcs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (_, text) in sources(&root().join("proto"), ".proto") {
        let mut service = String::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            match keyword {
                "service" => {
                    service = name.clone();
                    names.insert(name);
                }
                "rpc" => {
                    rpcs.entry(service.clone())
                        .or_default()
                        .insert(name.clone());
                    names.insert(name);
                }
                "message" | "enum" => {
                    names.insert(name);
                }
                _ => {}
            }
        }
    }
    (rpcs, names)
}

#[test]
fn every_documented_rpc_is_declared() {
    let (rpcs, names) = proto_names();
    assert!(rpcs
        .get("Authorizer")
        .is_some_and(|methods| methods.contains("Authorize")));
    let mut unknown = BTreeSet::new();
    for (document, text) in documents() {
        let tokens = words(&text, |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.'
        });
        for token in tokens {
            for part in token.split('.') {
                if let Some((service, method)) = part.split_once('/') {
                    if rpcs.contains_key(service) && !rpcs[service].contains(method) {
                        unknown.insert(format!("{document}: {service}/{method}"));
                    }
                }
            }
        }
        for word in words(&text, |c| c.is_ascii_alphanumeric()) {
            let looks_like_rpc = RPC_VERBS.iter().any(|verb| {
                word.strip_prefix(verb)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            });
            if looks_like_rpc && !names.contains(word) {
                unknown.insert(format!("{document}: {word}"));
            }
        }
    }
    assert!(unknown.is_empty(), "not declared in proto/: {unknown:?}");
}

#[test]
fn every_documented_source_path_exists() {
    let mut missing = BTreeSet::new();
    for (document, text) in documents() {
        let (_, spans) = code_and_spans(&text);
        for span in spans {
            let path = span.trim_end_matches('/');
            let is_path = [
                "src/",
                "proto/",
                "migrations/",
                "policies/",
                "tests/",
                "benches/",
            ]
            .iter()
            .any(|top| span.starts_with(top))
                && !span.contains(['*', ' ', '…', '<']);
            if is_path && !root().join(path).exists() {
                missing.insert(format!("{document}: {span}"));
            }
        }
    }
    assert!(missing.is_empty(), "no such file or directory: {missing:?}");
}

/// A heading's anchor as GitHub makes it.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_link_between_documents_resolves() {
    let documents = documents();
    let mut broken = Vec::new();
    for (document, text) in &documents {
        let base = root().join(document).parent().unwrap().to_path_buf();
        for piece in text.split("](").skip(1) {
            let Some(target) = piece.split(')').next() else {
                continue;
            };
            if target.starts_with("http") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target, None),
            };
            let path = if file.is_empty() {
                root().join(document)
            } else {
                base.join(file)
            };
            if !path.exists() {
                broken.push(format!("{document}: {target} (no such file)"));
                continue;
            }
            if let Some(fragment) = fragment {
                if !anchors(&read(&path)).contains(fragment) {
                    broken.push(format!("{document}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_a_front_door() {
    let readme = read(&root().join("README.md"));
    assert!(
        readme.lines().count() <= 150,
        "README.md has {} lines; move detail into docs/",
        readme.lines().count()
    );
    assert!(readme.contains("\ncargo test\n"), "the test command");
    for (document, _) in documents() {
        if document != "README.md" {
            assert!(
                readme.contains(&format!("]({document})")),
                "README.md does not list {document}"
            );
        }
    }
}
