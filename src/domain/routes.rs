//! The route table: `METHOD /path/{param}` → the permission a request needs,
//! compiled once per policy load into one radix router per method.

use crate::domain::permission::Permission;
use crate::domain::quoted::Quoted;

/// The HTTP methods a route may name.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// One row of the table: the template as written and what it requires.
#[derive(Debug, Clone)]
pub struct Route {
    pub template: String,
    pub permission: Permission,
    /// The permission's index in the catalog the table was built with.
    pub permission_index: u32,
}

/// A matched route with its path parameters, borrowed from the table and the path.
#[derive(Debug)]
pub struct RouteMatch<'table, 'path> {
    pub route: &'table Route,
    pub params: matchit::Params<'table, 'path>,
}

#[derive(Default, Clone)]
pub struct RouteTable {
    /// One router per entry of `METHODS`, at the same position.
    routers: [matchit::Router<Route>; METHODS.len()],
    len: usize,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "RouteTable({} routes)", self.len)
    }
}

impl RouteTable {
    /// Adds `METHOD /path` → permission; the error says what is wrong with it.
    pub fn insert(
        &mut self,
        spec: &str,
        permission: Permission,
        permission_index: u32,
    ) -> Result<(), String> {
        let Some((method_text, template)) = spec.split_once(' ') else {
            return Err("expected `METHOD /path`".to_owned());
        };
        let Some(method_index) = METHODS.iter().position(|known| *known == method_text) else {
            return Err(format!(
                "unknown method {}; valid methods: {}",
                Quoted(method_text),
                METHODS.join(", ")
            ));
        };
        if !template.starts_with('/') || template.contains(['?', '#', ' ']) {
            return Err(format!(
                "path {} must start with `/` and hold no query, fragment or space",
                Quoted(template)
            ));
        }
        let route = Route {
            template: template.to_owned(),
            permission,
            permission_index,
        };
        self.routers[method_index]
            .insert(template, route)
            .map_err(|error| match error {
                matchit::InsertError::Conflict { with } => {
                    format!("conflicts with {method_text} {with}")
                }
                other => format!("invalid path {}: {other}", Quoted(template)),
            })?;
        self.len += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finds the route for a request; the query string and fragment are ignored.
    /// Method names are matched case-insensitively.
    pub fn find<'table, 'path>(
        &'table self,
        method: &str,
        path: &'path str,
    ) -> Option<RouteMatch<'table, 'path>> {
        let method_index = METHODS
            .iter()
            .position(|known| known.eq_ignore_ascii_case(method))?;
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let matched = self.routers.get(method_index)?.at(path).ok()?;
        Some(RouteMatch {
            route: matched.value,
            params: matched.params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str)]) -> Result<RouteTable, String> {
        let mut table = RouteTable::default();
        for (spec, permission) in rows {
            table.insert(spec, Permission::parse(permission).unwrap(), 0)?;
        }
        Ok(table)
    }

    #[test]
    fn matches_templates_and_params() {
        let table = table(&[
            ("GET /customers", "customers:read"),
            ("GET /customers/{id}", "customers:read"),
            ("POST /payments/refund/{id}", "refunds:write"),
            ("GET /subscriptions/search", "subscriptions:read"),
            ("GET /subscriptions/{id}", "subscriptions:read"),
        ])
        .unwrap();
        let found = table.find("GET", "/customers/cus_123?expand=all").unwrap();
        assert_eq!(found.route.template, "/customers/{id}");
        assert_eq!(found.params.get("id"), Some("cus_123"));
        assert_eq!(
            table
                .find("get", "/customers")
                .unwrap()
                .route
                .permission
                .as_str(),
            "customers:read"
        );
        assert_eq!(
            table
                .find("GET", "/subscriptions/search")
                .unwrap()
                .route
                .template,
            "/subscriptions/search"
        );
        assert_eq!(
            table
                .find("GET", "/subscriptions/sub_1")
                .unwrap()
                .route
                .template,
            "/subscriptions/{id}"
        );
        assert!(table.find("DELETE", "/customers").is_none());
        assert!(table.find("GET", "/customers/").is_none());
        assert!(table.find("GET", "/unknown").is_none());
        assert!(table.find("BREW", "/customers").is_none());
    }

    #[test]
    fn bad_rows_are_refused_with_a_reason() {
        let cases = [
            (vec![("FETCH /x", "a:read")], "unknown method"),
            (vec![("GET x", "a:read")], "must start with"),
            (vec![("GET", "a:read")], "METHOD /path"),
            (vec![("GET /x?y", "a:read")], "no query"),
            (
                vec![("GET /x", "a:read"), ("GET /x", "a:read")],
                "conflicts",
            ),
            (
                vec![("GET /x/{id}", "a:read"), ("GET /x/{name}", "a:read")],
                "conflicts",
            ),
        ];
        for (rows, needle) in cases {
            let error = table(&rows).unwrap_err();
            assert!(error.contains(needle), "{error}");
        }
    }
}
