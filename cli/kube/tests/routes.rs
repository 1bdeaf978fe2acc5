//! The Ingress routes each role's paths to its pool; the shop decides which paths a role
//! serves and publishes them (`shop routes`, `shop::http::prefixes`). The Ingress keeps
//! a copy (`scalectl_kube::edge::prefixes`: rendering needs no shop binary), and this
//! test fails when the copy and the shop's table differ.

use scalectl_core::manifest::RoleName;
use scalectl_kube::edge::prefixes;
use shop::Role;

const ROLES: [(RoleName, Role); 5] = [
    (RoleName::Auth, Role::Auth),
    (RoleName::Catalog, Role::Catalog),
    (RoleName::Cart, Role::Cart),
    (RoleName::Orders, Role::Orders),
    (RoleName::Flash, Role::Flash),
];

#[test]
fn the_ingress_routes_each_role_the_prefixes_the_shop_says_it_serves() {
    for (name, role) in ROLES {
        assert_eq!(name.as_str(), role.as_str());
        let ours: Vec<String> = prefixes(name).iter().map(|p| p.to_string()).collect();
        assert_eq!(ours, shop::http::prefixes(role), "role {}", role.as_str());
    }
    assert_eq!(prefixes(RoleName::All), ["/"], "the monolith takes everything");
}
