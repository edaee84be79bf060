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

/// docs/protocol.md's sample-rate table is the one ctid uses, codec for codec.
#[test]
fn the_sample_rate_table_of_the_docs_is_the_codes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/protocol.md")).unwrap();
    let table = doc
        .split("| sample rate | codecs |")
        .nth(1)
        .expect("docs/protocol.md has the sample-rate table");
    let mut documented: Vec<(String, u32)> = Vec::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let rate: u32 = cells[1].parse().unwrap_or_else(|_| panic!("{row}"));
        for codec in cells[2].split(',') {
            documented.push((codec.trim().trim_matches('`').to_owned(), rate));
        }
    }
    let mut code: Vec<(String, u32)> = ctid_proto::calls::SAMPLE_RATES
        .iter()
        .map(|(c, r)| ((*c).to_owned(), *r))
        .collect();
    documented.sort();
    code.sort();
    assert_eq!(documented, code);
}
