//! The Ingress in front of the shop pools: everything to the monolith at levels 1 to 3,
//! by path to the role pools from level 4.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use scalectl_core::manifest::RoleName;

use crate::meta::{self, NAME_LABEL, Scope};

/// The path prefixes each role serves: a copy of the shop's own table (`shop routes`),
/// so rendering needs no shop binary; `cli/kube/tests/routes.rs` holds the two equal.
pub fn prefixes(role: RoleName) -> &'static [&'static str] {
    match role {
        RoleName::All => &["/"],
        RoleName::Auth => &["/register", "/login", "/logout", "/me"],
        RoleName::Catalog => &["/shops", "/products"],
        RoleName::Cart => &["/cart"],
        RoleName::Orders => &["/checkout", "/orders", "/returns"],
        RoleName::Flash => &["/flash-sales"],
    }
}

pub fn ingress(scope: &Scope, roles: &[RoleName], class: Option<&str>) -> Ingress {
    let paths = roles
        .iter()
        .flat_map(|&role| {
            prefixes(role).iter().map(move |prefix| HTTPIngressPath {
                path: Some((*prefix).into()),
                path_type: "Prefix".into(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: meta::shop(role),
                        port: Some(ServiceBackendPort { name: Some("http".into()), ..Default::default() }),
                    }),
                    ..Default::default()
                },
            })
        })
        .collect();
    Ingress {
        metadata: scope.meta("shop", &[(NAME_LABEL, "shop")]),
        spec: Some(IngressSpec {
            ingress_class_name: class.map(str::to_string),
            rules: Some(vec![IngressRule { http: Some(HTTPIngressRuleValue { paths }), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
