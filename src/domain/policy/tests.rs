//! The policy file's parse and validation, and the catalog's answers.

use super::*;

fn paynext() -> Catalog {
    Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap().catalog
}

#[test]
fn the_helm_charts_sample_policy_is_valid() {
    #[derive(serde::Deserialize)]
    struct Values {
        policy: PolicyValues,
    }
    #[derive(serde::Deserialize)]
    struct PolicyValues {
        content: String,
    }
    let values: Values = serde_saphyr::from_str(include_str!(
        "../../../helm/keygate/ci/production-values.yaml"
    ))
    .unwrap();
    let policy = Policy::parse(&values.policy.content).unwrap();
    assert_eq!(policy.routes.len(), 5);
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

#[test]
fn offered_scopes_are_accepted() {
    let scopes = strings(&[
        "customers:read",
        "refunds:write",
        "payments:*",
        "*",
        "api_keys:create",
    ]);
    assert_eq!(paynext().parse_scopes(&scopes).unwrap().len(), 5);
}

#[test]
fn actions_a_resource_does_not_offer_are_refused_with_what_it_offers() {
    let error = paynext()
        .parse_scopes(&strings(&["refunds:read"]))
        .unwrap_err();
    assert!(error.contains("offers only write"), "{error}");
}

#[test]
fn unknown_resources_are_refused_with_the_list() {
    let error = paynext()
        .parse_scopes(&strings(&["widgets:read"]))
        .unwrap_err();
    assert!(
        error.contains("valid resources: api_keys, client_sessions"),
        "{error}"
    );
    assert!(paynext().parse_scopes(&strings(&["widgets:*"])).is_err());
}

#[test]
fn write_implies_read_where_offered() {
    let catalog = paynext();
    let scopes = catalog
        .parse_scopes(&strings(&["customers:write", "refunds:write"]))
        .unwrap();
    let effective = catalog.effective(&scopes);
    assert!(effective.allows(&Permission::parse("customers:read").unwrap()));
    assert!(!effective.allows(&Permission::parse("refunds:read").unwrap()));
}

#[test]
fn nested_resources_and_prefix_wildcards() {
    let policy = Policy::parse(include_str!("../../../policies/payconex.yaml")).unwrap();
    let catalog = policy.catalog;
    assert!(catalog
        .parse_scopes(&strings(&["pcx:account_updater:*"]))
        .is_ok());
    assert!(catalog.parse_scopes(&strings(&["pcx:*"])).is_ok());
    assert!(catalog
        .parse_scopes(&strings(&["pcx:account_updater:schedules:patch"]))
        .is_ok());
    assert!(catalog
        .parse_scopes(&strings(&["pcx:account_updater:results:create"]))
        .is_err());
    assert!(catalog.parse_scopes(&strings(&["pcx:account:*"])).is_err());
}

#[test]
fn presets_resolve_and_unknown_ones_list_the_valid_names() {
    let catalog = paynext();
    assert!(!catalog.preset("read_only").unwrap().is_empty());
    let error = catalog.preset("admin").unwrap_err();
    assert!(error.contains("full_access, read_only, write"), "{error}");
}

#[test]
fn invalid_catalogs_are_refused() {
    let cases = [
        "catalog: {resources: {api_keys: [read]}}",
        "catalog: {resources: {customers: []}}",
        "catalog: {resources: {customers: [read, read]}}",
        "catalog: {resources: {Customers: [read]}}",
        "catalog: {resources: {customers: [read]}, presets: {x: [orders:read]}}",
        "catalog: {resources: {customers: [read]}, unknown: 1}",
        "not yaml: [",
        "catalog: {resources: {a: [read]}}\nroutes: [{GET /a: a:write}]",
        "catalog: {resources: {a: [read]}}\nroutes: [{GET /a: b:read}]",
        "catalog: {resources: {a: [read]}}\nroutes: [{GET /a: a:*}]",
        "catalog: {resources: {a: [read]}}\nroutes: [{BREW /a: a:read}]",
        "catalog: {resources: {a: [read]}}\nroutes: [{GET /a: a:read}, {GET /a: a:read}]",
        "catalog: {resources: {a: [read]}}\nroutes: [{GET /a: a:read, GET /b: a:read}]",
    ];
    for text in cases {
        assert!(Policy::parse(text).is_err(), "{text}");
    }
}

/// The error `text` is refused with, as one line.
fn refusal(text: &str) -> String {
    match Policy::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn duplicate_keys_are_refused_naming_the_line_and_the_key() {
    let cases = [
        (
            "catalog:\n  resources:\n    customers: [read, write]\n    customers: [read]\n",
            "line 4",
            "customers",
        ),
        (
            "catalog:\n  resources: {a: [read, write]}\nroutes:\n  - GET /a: a:write\n    GET /a: a:read\n",
            "line 5",
            "GET /a",
        ),
        (
            "catalog:\n  resources: {a: [read]}\n  presets:\n    mine: [a:read]\n    mine: [a:*]\n",
            "line 5",
            "mine",
        ),
        (
            "catalog:\n  resources: {a: [read, write]}\n  implications:\n    write: [read]\n    write: []\n",
            "line 5",
            "write",
        ),
        (
            "catalog:\n  resources: {a: [read]}\ncatalog:\n  resources: {b: [read]}\n",
            "line 3",
            "catalog",
        ),
    ];
    for (text, line, key) in cases {
        let error = refusal(text);
        assert!(error.contains(line) && error.contains(key), "{error}");
    }
}

/// A YAML merge key (`<<`) would let a key written out in full quietly
/// replace a merged one, past the duplicate check: refused wherever it stands.
#[test]
fn merge_keys_are_refused_naming_the_line() {
    let cases = [
        (
            "catalog:\n  resources:\n    <<: {customers: [read, write]}\n    customers: [read]\n",
            "line 3",
        ),
        (
            "catalog:\n  resources: {a: [read, write]}\nroutes:\n  - <<: {GET /a: a:write}\n    GET /a: a:read\n",
            "line 4",
        ),
        (
            "catalog:\n  resources: {a: [read]}\n  presets:\n    <<: {mine: [a:read]}\n    mine: [a:read]\n",
            "line 4",
        ),
    ];
    for (text, line) in cases {
        let error = refusal(text);
        assert!(
            error.contains(line) && error.contains("merge key"),
            "{text}: {error}"
        );
    }
}

#[test]
fn actions_holding_a_colon_are_refused() {
    let error = refusal("catalog:\n  resources:\n    customers:\n      - read\n      - a:b\n");
    assert!(
        error.contains("line 5") && error.contains("\"a:b\""),
        "{error}"
    );
}

#[test]
fn implications_name_only_offered_actions() {
    let base = "catalog:\n  resources: {customers: [read, write]}\n  implications:\n";
    for (implications, needle) in [
        ("    wirte: [read]\n", "wirte"),
        ("    write: [raed]\n", "raed"),
    ] {
        let error = refusal(&format!("{base}{implications}"));
        assert!(
            error.contains("line 4") && error.contains(needle),
            "{error}"
        );
        assert!(
            error.contains("actions offered: create, delete, read, update, write"),
            "{error}"
        );
    }
}

#[test]
fn catalog_errors_name_the_line() {
    let cases = [
        ("catalog:\n  resources:\n    a: [read]\n    b: []\n", "line 4: resources.b"),
        (
            "catalog:\n  resources: {a: [read]}\n  presets:\n    mine:\n      - a:read\n      - a:write\n",
            "line 6: presets.mine: a:write",
        ),
        (
            "catalog:\n  resources: {a: [read]}\nroutes:\n  - GET /a: a:read\n  - GET /b: a:write\n",
            "line 5: routes[1] GET /b",
        ),
    ];
    for (text, needle) in cases {
        let error = refusal(text);
        assert!(error.contains(needle), "{error}");
    }
}

#[test]
fn route_errors_name_the_entry() {
    let text = "catalog: {resources: {a: [read]}}\nroutes: [{GET /a: a:read}, {GET /b: a:write}]";
    let error = format!("{:#}", Policy::parse(text).unwrap_err());
    assert!(
        error.contains("routes[1] GET /b: a:write: resource \"a\" offers only read"),
        "{error}"
    );
}

#[test]
fn example_policies_hold_their_route_tables() {
    assert_eq!(
        Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap().routes.len(),
        18
    );
    assert!(
        !Policy::parse(include_str!("../../../policies/payconex.yaml"))
            .unwrap()
            .routes
            .is_empty()
    );
}

#[test]
fn implications_are_transitive() {
    let policy = Policy::parse(
        "catalog: {resources: {docs: [admin, write, read]}, implications: {admin: [write], write: [read]}}",
    )
    .unwrap();
    let catalog = policy.catalog;
    let scopes = catalog.parse_scopes(&strings(&["docs:admin"])).unwrap();
    assert!(catalog
        .effective(&scopes)
        .allows(&Permission::parse("docs:read").unwrap()));
}
