//! How keys, audit events, organizations and propagation reports look: as JSON
//! values with the proto's field names (enums as lowercase words, times as RFC
//! 3339, absent ids as null), and as table rows. Nothing here sees a token.

use comfy_table::Table;
use serde_json::{json, Value};

use super::output::{new_table, optional_json, or_dash, time_json, time_text};
use crate::grpc::pb;

fn kind_name(kind: pb::KeyKind) -> &'static str {
    match kind {
        pb::KeyKind::Organization => "organization",
        pb::KeyKind::System => "system",
        pb::KeyKind::Unspecified => "unspecified",
    }
}

fn environment_name(environment: pb::Environment) -> &'static str {
    match environment {
        pb::Environment::Live => "live",
        pb::Environment::Test => "test",
        pb::Environment::Unspecified => "unspecified",
    }
}

fn state_name(state: pb::KeyState) -> &'static str {
    match state {
        pb::KeyState::Active => "active",
        pb::KeyState::Disabled => "disabled",
        pb::KeyState::Revoked => "revoked",
        pb::KeyState::Expired => "expired",
        pb::KeyState::Unspecified => "unspecified",
    }
}

/// Metadata sorted by key, whatever order the map came in.
fn sorted_metadata(key: &pb::Key) -> Vec<(&String, &String)> {
    let mut pairs: Vec<_> = key.metadata.iter().collect();
    pairs.sort();
    pairs
}

pub fn key_json(key: &pb::Key) -> Value {
    let metadata: serde_json::Map<String, Value> = sorted_metadata(key)
        .into_iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "id": key.id,
        "display_hint": key.display_hint,
        "name": key.name,
        "description": key.description,
        "organization_id": optional_json(&key.organization_id),
        "kind": kind_name(key.kind()),
        "environment": environment_name(key.environment()),
        "state": state_name(key.state()),
        "scopes": key.scopes,
        "allowed_cidrs": key.allowed_cidrs,
        "expire_time": time_json(key.expire_time.as_ref()),
        "metadata": metadata,
        "lock_scopes": key.lock_scopes,
        "version": key.version,
        "create_time": time_json(key.create_time.as_ref()),
        "update_time": time_json(key.update_time.as_ref()),
        "last_used_time": time_json(key.last_used_time.as_ref()),
        "disable_time": time_json(key.disable_time.as_ref()),
        "revoke_time": time_json(key.revoke_time.as_ref()),
        "previous_secret_expire_time": time_json(key.previous_secret_expire_time.as_ref()),
        "created_by_key_id": optional_json(&key.created_by_key_id),
    })
}

/// One key, one field per row.
pub fn key_table(key: &pb::Key) -> Table {
    let metadata = sorted_metadata(key)
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("\n");
    let networks = if key.allowed_cidrs.is_empty() {
        "any".to_owned()
    } else {
        key.allowed_cidrs.join("\n")
    };
    let rows = [
        ("id", key.id.clone()),
        ("display hint", key.display_hint.clone()),
        ("name", key.name.clone()),
        ("description", or_dash(&key.description)),
        ("organization", or_dash(&key.organization_id)),
        ("kind", kind_name(key.kind()).to_owned()),
        (
            "environment",
            environment_name(key.environment()).to_owned(),
        ),
        ("state", state_name(key.state()).to_owned()),
        ("scopes", key.scopes.join("\n")),
        ("allowed networks", networks),
        ("expires", time_text(key.expire_time.as_ref())),
        ("metadata", or_dash(&metadata)),
        ("scopes locked", key.lock_scopes.to_string()),
        ("version", key.version.to_string()),
        ("created", time_text(key.create_time.as_ref())),
        ("updated", time_text(key.update_time.as_ref())),
        ("last used", time_text(key.last_used_time.as_ref())),
        ("disabled", time_text(key.disable_time.as_ref())),
        ("revoked", time_text(key.revoke_time.as_ref())),
        (
            "previous secret until",
            time_text(key.previous_secret_expire_time.as_ref()),
        ),
        ("created by", or_dash(&key.created_by_key_id)),
    ];
    let mut table = new_table(&[]);
    for (field, value) in rows {
        table.add_row(vec![field.to_owned(), value]);
    }
    table
}

/// Keys, one per row.
pub fn keys_table(keys: &[pb::Key]) -> Table {
    let mut table = new_table(&[
        "ID",
        "NAME",
        "ORGANIZATION",
        "ENV",
        "STATE",
        "SCOPES",
        "EXPIRES",
        "LAST USED",
    ]);
    for key in keys {
        table.add_row(vec![
            key.id.clone(),
            key.name.clone(),
            or_dash(&key.organization_id),
            environment_name(key.environment()).to_owned(),
            state_name(key.state()).to_owned(),
            key.scopes.join(", "),
            time_text(key.expire_time.as_ref()),
            time_text(key.last_used_time.as_ref()),
        ]);
    }
    table
}

pub fn event_json(event: &pb::KeyEvent) -> Value {
    // The changes arrive as JSON text; a script should not have to parse twice.
    let changes = serde_json::from_str::<Value>(&event.changes_json)
        .unwrap_or_else(|_| Value::String(event.changes_json.clone()));
    json!({
        "sequence": event.sequence,
        "occur_time": time_json(event.occur_time.as_ref()),
        "action": event.action,
        "key_id": event.key_id,
        "organization_id": optional_json(&event.organization_id),
        "actor_key_id": optional_json(&event.actor_key_id),
        "changes": changes,
    })
}

pub fn events_table(events: &[pb::KeyEvent]) -> Table {
    let mut table = new_table(&["SEQUENCE", "TIME", "ACTION", "KEY", "ACTOR", "CHANGES"]);
    for event in events {
        table.add_row(vec![
            event.sequence.to_string(),
            time_text(event.occur_time.as_ref()),
            event.action.clone(),
            event.key_id.clone(),
            or_dash(&event.actor_key_id),
            or_dash(&event.changes_json),
        ]);
    }
    table
}

pub fn organization_json(organization: &pb::Organization) -> Value {
    json!({
        "id": organization.id,
        "display_name": organization.display_name,
        "create_time": time_json(organization.create_time.as_ref()),
    })
}

pub fn organizations_table(organizations: &[pb::Organization]) -> Table {
    let mut table = new_table(&["ID", "NAME", "CREATED"]);
    for organization in organizations {
        table.add_row(vec![
            organization.id.clone(),
            organization.display_name.clone(),
            time_text(organization.create_time.as_ref()),
        ]);
    }
    table
}

pub fn propagation_json(propagation: Option<&pb::Propagation>) -> Value {
    let Some(propagation) = propagation else {
        return Value::Null;
    };
    json!({
        "waited": propagation.waited,
        "complete": propagation.complete,
        "confirmed_replicas": propagation.confirmed_replicas,
        "unconfirmed_replicas": propagation.unconfirmed_replicas,
        "lease_expired_replicas": propagation.lease_expired_replicas,
    })
}

/// One line saying how far a change had spread when the call returned.
pub fn propagation_line(propagation: Option<&pb::Propagation>) -> String {
    let Some(propagation) = propagation else {
        return "propagation: not reported by the server".to_owned();
    };
    if !propagation.waited {
        return "propagation: not waited for (--wait waits until every replica has applied it)"
            .to_owned();
    }
    let confirmed = match propagation.confirmed_replicas {
        1 => "1 replica confirmed".to_owned(),
        count => format!("{count} replicas confirmed"),
    };
    let mut line = if propagation.complete {
        format!("propagation: complete, {confirmed}")
    } else {
        format!("propagation: incomplete, {confirmed}")
    };
    if !propagation.unconfirmed_replicas.is_empty() {
        line.push_str("; not confirmed: ");
        line.push_str(&propagation.unconfirmed_replicas.join(", "));
    }
    if !propagation.lease_expired_replicas.is_empty() {
        line.push_str("; lease expired, no longer trusting their caches: ");
        line.push_str(&propagation.lease_expired_replicas.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_lines() {
        let mut propagation = pb::Propagation::default();
        assert!(propagation_line(Some(&propagation)).contains("not waited for"));
        propagation.waited = true;
        propagation.complete = true;
        propagation.confirmed_replicas = 1;
        assert_eq!(
            propagation_line(Some(&propagation)),
            "propagation: complete, 1 replica confirmed"
        );
        propagation.complete = false;
        propagation.confirmed_replicas = 2;
        propagation.unconfirmed_replicas = vec!["b".into(), "c".into()];
        propagation.lease_expired_replicas = vec!["d".into()];
        assert_eq!(
            propagation_line(Some(&propagation)),
            "propagation: incomplete, 2 replicas confirmed; not confirmed: b, c; \
             lease expired, no longer trusting their caches: d"
        );
    }

    #[test]
    fn keys_in_json_name_enums_in_words_and_absent_ids_as_null() {
        let key = pb::Key {
            id: "abc".into(),
            kind: pb::KeyKind::System.into(),
            environment: pb::Environment::Test.into(),
            state: pb::KeyState::Revoked.into(),
            metadata: [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let value = key_json(&key);
        assert_eq!(value["kind"], "system");
        assert_eq!(value["environment"], "test");
        assert_eq!(value["state"], "revoked");
        assert_eq!(value["organization_id"], Value::Null);
        assert_eq!(value["expire_time"], Value::Null);
        assert_eq!(value["metadata"], json!({"a": "1", "b": "2"}));
        let table = key_table(&key).to_string();
        let first = table.find("a=1").unwrap();
        let second = table.find("b=2").unwrap();
        assert!(first < second, "{table}");
    }

    #[test]
    fn event_changes_are_parsed() {
        let event = pb::KeyEvent {
            changes_json: r#"{"name":"new"}"#.into(),
            ..Default::default()
        };
        assert_eq!(event_json(&event)["changes"], json!({"name": "new"}));
        assert_eq!(event_json(&event)["actor_key_id"], Value::Null);
    }
}
