//! docs/security.md names the tests of each defence: each must exist where it says.

#[test]
fn every_test_docs_security_names_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let named: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains(".rs::"))
        .collect();
    assert!(named.len() > 30, "{named:?}");
    for name in named {
        let (file, path) = name.split_once("::").unwrap();
        let function = path.rsplit("::").next().unwrap();
        let source = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{name}: {file}: {e}"));
        assert!(
            source.contains(&format!("fn {function}()")),
            "docs/security.md names {name}, which {file} does not have"
        );
    }
}
