use super::*;

#[test]
fn secrets_do_not_debug_print() {
    let s = AmiSettings {
        secret: Secret::new("hunter2"),
        ..AmiSettings::default()
    };
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn database_urls_show_no_password() {
    let url =
        PostgresUrl::parse("postgres://ctid:hunter2@db.example.com:5433/calls?password=hunter3")
            .unwrap();
    assert_eq!(url.to_string(), "postgres://ctid@db.example.com:5433/calls");
    let database = Database::Postgres(url);
    for shown in [format!("{database:?}"), database.to_string()] {
        assert!(!shown.contains("hunter"), "{shown}");
    }
    assert_eq!(
        PostgresUrl::parse("postgresql://127.0.0.1/test")
            .unwrap()
            .to_string(),
        "postgres://127.0.0.1:5432/test"
    );
    for bad in [
        "mysql://ctid@db/calls",
        "host=db user=ctid",
        "postgres://ctid:hunter2@db:port/calls",
        "postgres://ctid:hunter2@db/calls?sslmode=require",
        "postgres://ctid:hunter2@db/calls?bogus=1",
    ] {
        let e = PostgresUrl::parse(bad).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn placeholders_are_known_whatever_their_case() {
    for placeholder in ["change-me", "CHANGEME", " Secret "] {
        assert!(Secret::new(placeholder).is_placeholder(), "{placeholder}");
    }
    assert!(!Secret::new("c9f2-real").is_placeholder());
}

#[test]
fn durations_read_well() {
    assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(human_duration(Duration::from_secs(2)), "2s");
    assert_eq!(human_duration(Duration::from_millis(1840)), "1.8s");
}

#[test]
fn ipv6_endpoint_is_bracketed() {
    let s = AmiSettings {
        host: "::1".into(),
        ..AmiSettings::default()
    };
    assert_eq!(s.endpoint(), "[::1]:5038");
}
