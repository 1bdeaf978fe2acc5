//! The Ingress routes each role's paths to its pool; the shop decides which paths a role
//! serves (`app/src/http.rs`). Until the shop publishes its route table (issue 15), this
//! test reads the router's source and fails when a role serves a path the Ingress would
//! send elsewhere, or a prefix matches nothing the role serves.

use scalectl_core::manifest::RoleName;
use scalectl_kube::edge::prefixes;

const ROLES: [(RoleName, &str); 5] = [
    (RoleName::Auth, "Role::Auth"),
    (RoleName::Catalog, "Role::Catalog"),
    (RoleName::Cart, "Role::Cart"),
    (RoleName::Orders, "Role::Orders"),
    (RoleName::Flash, "Role::Flash"),
];

/// The paths registered inside `if roles.contains(<marker>) { … }`.
fn served(source: &str, marker: &str) -> Vec<String> {
    let start = source.find(&format!("roles.contains({marker})")).unwrap_or_else(|| panic!("http.rs no longer gates routes on {marker}"));
    let block = &source[start..];
    let end = block.find("\n    }").expect("the role's block ends");
    block[..end].split(".route(\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect()
}

fn covers(prefix: &str, path: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[test]
fn every_path_a_role_serves_is_routed_to_that_role_and_no_other() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../app/src/http.rs")).unwrap();
    for (role, marker) in ROLES {
        let paths = served(&source, marker);
        assert!(!paths.is_empty(), "{marker} serves no paths?");
        for path in &paths {
            let owners: Vec<RoleName> = ROLES.iter().map(|r| r.0).filter(|r| prefixes(*r).iter().any(|p| covers(p, path))).collect();
            assert_eq!(owners, [role], "{path} is served by {} but the Ingress routes it to {owners:?}", role.as_str());
        }
        for prefix in prefixes(role) {
            assert!(paths.iter().any(|p| covers(prefix, p)), "{prefix} is routed to {} which serves nothing under it", role.as_str());
        }
    }
}
