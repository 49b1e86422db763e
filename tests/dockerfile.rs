//! The Dockerfile, read (no engine runs here): dependencies build in a layer
//! before the sources arrive, every test and bench target the manifest
//! declares has a stand-in there, the image says what it is and exposes both
//! ports, its health check runs `keygate health`, and `.dockerignore` keeps out
//! only what the build does not copy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test reports a failure by panicking"
)]

use std::path::PathBuf;

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn instructions() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        if current.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    instructions.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    instructions
}

/// Where each `[[test]]` and `[[bench]]` of Cargo.toml lives: its `path`, or
/// where cargo looks when it has none.
fn declared_targets() -> Vec<String> {
    let mut targets = Vec::new();
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut finish = |section: &str, name: &mut Option<String>, path: &mut Option<String>| {
        let folder = match section {
            "[[test]]" => "tests",
            "[[bench]]" => "benches",
            _ => return,
        };
        let name = name.take().expect("a target without a name");
        targets.push(path.take().unwrap_or(format!("{folder}/{name}.rs")));
    };
    for line in read("Cargo.toml").lines() {
        let line = line.trim();
        if line.starts_with('[') {
            finish(&section, &mut name, &mut path);
            (name, path) = (None, None);
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "name" => name = Some(value),
            "path" => path = Some(value),
            _ => {}
        }
    }
    finish(&section, &mut name, &mut path);
    targets
}

#[test]
fn dependencies_build_before_the_sources_are_copied() {
    let instructions = instructions();
    let position = |wanted: &dyn Fn(&str) -> bool, what: &str| {
        instructions
            .iter()
            .position(|instruction| wanted(instruction))
            .unwrap_or_else(|| panic!("no {what} in the Dockerfile"))
    };
    let manifest = position(&|i| i.starts_with("COPY Cargo.toml Cargo.lock"), "manifest");
    let dependencies = position(
        &|i| i.starts_with("RUN ") && i.contains("cargo build"),
        "dependency build",
    );
    let sources = position(&|i| i == "COPY src src", "COPY src src");
    assert!(manifest < dependencies && dependencies < sources);
    let stand_ins = &instructions[dependencies];
    for target in declared_targets() {
        assert!(
            stand_ins.contains(&target),
            "{target}, declared in Cargo.toml, has no stand-in in the dependency layer"
        );
    }
    assert!(declared_targets().contains(&"benches/authorize/main.rs".to_owned()));
    let build = &instructions[sources + 1..];
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN touch") && i.contains("--bin keygate")),
        "the real build must touch the sources, which COPY may give older times"
    );
    for instruction in &instructions {
        assert!(
            !instruction.starts_with("COPY tests") && !instruction.starts_with("COPY benches"),
            "{instruction}: tests and benches stay out of the build"
        );
    }
}

#[test]
fn the_image_says_what_it_is_and_how_to_check_it() {
    let instructions = instructions();
    let has = |prefix: &str| instructions.iter().any(|i| i.starts_with(prefix));
    assert!(has("EXPOSE 50051 9090"), "gRPC and metrics ports");
    let labels: String = instructions
        .iter()
        .filter(|i| i.starts_with("LABEL "))
        .cloned()
        .collect();
    for label in ["title", "description", "source", "licenses", "version"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{label}=")),
            "no {label} label"
        );
    }
    assert!(labels.contains(&format!(
        "org.opencontainers.image.licenses=\"{}\"",
        env!("CARGO_PKG_LICENSE")
    )));
    assert!(
        has(&format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"))),
        "the VERSION default is Cargo.toml's version"
    );
    assert!(instructions.iter().any(|i| i.starts_with("HEALTHCHECK")
        && i.contains(r#"CMD ["/usr/local/bin/keygate", "health""#)));
}

#[test]
fn dockerignore_keeps_out_only_what_the_build_does_not_copy() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for needed in ["target", "tests", "benches"] {
        assert!(ignored.iter().any(|line| line == needed), "{needed}");
    }
    for instruction in instructions() {
        let Some(copied) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        if copied.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = copied.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                !ignored.iter().any(|line| line == source),
                "{source} is copied but .dockerignore leaves it out"
            );
        }
    }
}
