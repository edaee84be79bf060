//! docs/openapi.yaml, read once: its routes, and the schema of each documented answer.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{json, Value};

pub struct Spec(Value);

/// The spec of the repository.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        Spec(serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    })
}

/// The routes the listener serves, as (METHOD, path template).
pub fn served() -> BTreeSet<(String, String)> {
    ctid_actors::http::routes()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect()
}

/// The route template of a served route that `path` (without its query) matches.
fn template(method: &str, path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    served().into_iter().find_map(|(m, t)| {
        let pattern: Vec<&str> = t.split('/').collect();
        let fits = m == method
            && pattern.len() == parts.len()
            && pattern
                .iter()
                .zip(&parts)
                .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()));
        fits.then_some(t)
    })
}

impl Spec {
    /// Every (METHOD, path) the spec documents.
    pub fn routes(&self) -> BTreeSet<(String, String)> {
        let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for method in methods.iter().filter(|m| item.get(**m).is_some()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// Follows a local `$ref`.
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .0
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{r}: not in the spec")),
            None => v,
        }
    }

    /// Checks that the spec documents `status` for `method` `path` and that `body`
    /// validates against its schema; an unserved path must answer an error.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let what = format!("{method} {path} -> {status}: {body}");
        let schema = match template(method, path) {
            None => json!({"$ref": "#/components/schemas/Error"}),
            Some(t) => {
                let operation = &self.0["paths"][&t][method.to_lowercase()];
                let answer = operation["responses"]
                    .get(status.to_string())
                    .unwrap_or_else(|| panic!("{what}: the spec does not document {status}"));
                self.resolve(answer)["content"]["application/json"]["schema"].clone()
            }
        };
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.0["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{what}: {e}"));
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{what}: {errors:?}");
    }
}
