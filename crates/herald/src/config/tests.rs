//! The settings' parsing and checks.

use super::*;

#[test]
fn file_settings_parse_and_unknown_keys_are_named() {
    let s: Settings = toml::from_str(
        r#"
        listen = "0.0.0.0:9000"
        [delivery]
        workers = 8
        allow_networks = ["10.20.0.0/16", "fd00::/8"]
        retry = { schedule = ["1s", "5s"], retry_on = "transient" }
        [[event_types]]
        name = "render.done"
        "#,
    )
    .unwrap();
    assert_eq!(s.listen.port(), 9000);
    assert_eq!(s.delivery.workers, 8);
    assert_eq!(s.default_retry().unwrap().schedule.len(), 2);
    assert_eq!(s.event_types.len(), 1);
    assert!(s.address_policy().permits("10.20.3.4".parse().unwrap()));
    assert!(!s.address_policy().permits("10.21.3.4".parse().unwrap()));
    s.check().unwrap();
    let err = toml::from_str::<Settings>("[delivery]\nallow_networks = [\"10.0.0.0/33\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("allow_networks"), "{err}");

    let err = toml::from_str::<Settings>("[delivery]\nworkerz = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("workerz"), "{err}");
    let bad: Settings = toml::from_str("[delivery]\nretry = { schedule = [\"soon\"] }").unwrap();
    assert!(
        bad.check()
            .unwrap_err()
            .to_string()
            .contains("delivery.retry")
    );
}

#[test]
fn schema_files_are_read_beside_the_configuration_and_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("schemas/render.json"),
        r#"{"type": "object", "required": ["id"]}"#,
    )
    .unwrap();
    let config = dir.path().join("herald.toml");
    let write = |example: &str| {
        std::fs::write(
            &config,
            format!(
                "[[event_types]]\nname = \"render.completed\"\nschema_file = \"schemas/render.json\"\nexample = {example}\n"
            ),
        )
        .unwrap()
    };
    let args = ServeArgs {
        config: Some(config.clone()),
        ..ServeArgs::default()
    };
    write("{ id = \"r-1\" }");
    let s = Settings::load(&args).unwrap();
    assert_eq!(
        s.event_types[0].schema.as_ref().unwrap()["required"][0],
        "id"
    );
    write("{ name = \"r-1\" }");
    let err = format!("{:#}", Settings::load(&args).unwrap_err());
    assert!(
        err.contains("event_types[\"render.completed\"].example")
            && err.contains("data.id is required"),
        "{err}"
    );
}

#[test]
fn rate_limits_and_retention_parse_with_their_defaults_and_are_checked() {
    let d = Settings::default();
    assert_eq!(
        (d.api.rate_limit.per_second, d.api.rate_limit.burst()),
        (1000, 2000)
    );
    assert!(d.api.admin_rate_limit.is_unlimited());
    assert_eq!(d.retention.events.0, Duration::from_secs(30 * 86_400));
    d.check().unwrap();

    let s: Settings = toml::from_str(
        "[api]\nrate_limit = { per_second = 5 }\nadmin_rate_limit = { per_second = 50, burst = 1 }\n\
         [retention]\nevents = \"0\"\njobs = \"7d\"\ninterval = \"1m\"\nbatch = 100\n",
    )
    .unwrap();
    assert_eq!(
        s.api.rate_limit.burst(),
        10,
        "burst defaults to twice the rate"
    );
    assert_eq!(s.api.admin_rate_limit.burst(), 1);
    assert!(s.retention.events.0.is_zero());
    s.check().unwrap();

    let no_burst: Settings =
        toml::from_str("[api]\nrate_limit = { per_second = 5, burst = 0 }").unwrap();
    let err = no_burst.check().unwrap_err().to_string();
    assert!(err.contains("api.rate_limit.burst"), "{err}");
    let zero_batch: Settings = toml::from_str("[retention]\nbatch = 0").unwrap();
    let err = zero_batch.check().unwrap_err().to_string();
    assert!(err.contains("retention.batch"), "{err}");
    let err = toml::from_str::<Settings>("[retention]\nevent = \"1d\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("event"), "{err}");
}

#[test]
fn the_operator_section_is_checked_naming_its_keys_and_its_secret_never_shows() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let parse = |extra: &str| {
        toml::from_str::<Settings>(&format!(
            "[operator]\nurl = \"http://alerts.internal:9000/herald\"\nsecret = \"{secret}\"\n{extra}"
        ))
        .unwrap()
    };
    let s = parse("failing_after = \"30m\"");
    let webhook = s.operator_webhook().unwrap().expect("an operator webhook");
    assert_eq!(webhook.url.as_str(), "http://alerts.internal:9000/herald");
    assert_eq!(webhook.kind, crate::domain::WebhookKind::Operator);
    assert!(
        !format!("{s:?}").contains("MfKQ9r8"),
        "Debug hides the secret"
    );
    assert!(Settings::default().operator_webhook().unwrap().is_none());

    let err = |s: Settings| s.check().unwrap_err().to_string();
    let late = err(parse("failing_after = \"5d\""));
    assert!(
        late.contains("operator.failing_after") && late.contains("delivery.disable_after"),
        "{late}"
    );
    let mut no_secret = parse("");
    no_secret.operator.secret = None;
    assert!(err(no_secret).contains("operator.secret"));
    let mut bad = parse("");
    bad.operator.secret = Some(OperatorSecret("hunter2".into()));
    let bad = err(bad);
    assert!(
        bad.contains("operator.secret") && !bad.contains("hunter2"),
        "{bad}"
    );
    let mut ftp = parse("");
    ftp.operator.url = Some("ftp://alerts.internal/".into());
    assert!(err(ftp).contains("operator.url"));
}

#[test]
fn portal_settings_are_checked_naming_the_key() {
    let s: Settings = toml::from_str(
        r##"
        [portal]
        provider_name = "Acme Voice"
        logo_url = "https://cdn.example.com/logo.svg"
        frame_ancestors = ["https://dashboard.example.com"]
        colors = { primary = "#0a3d91", header = "#111" }
        link_lifetime = "2m"
        "##,
    )
    .unwrap();
    s.check().unwrap();
    assert_eq!(
        s.portal.logo_origin().as_deref(),
        Some("https://cdn.example.com")
    );
    for (toml, key) in [
        (
            "[portal]\ncolors = { primary = \"red; x\" }",
            "portal.colors.primary",
        ),
        (
            "[portal]\nframe_ancestors = [\"https://a.example/path\"]",
            "portal.frame_ancestors",
        ),
        (
            "[portal]\nframe_ancestors = [\"http://a.example\"]",
            "portal.frame_ancestors",
        ),
        (
            "[portal]\nlogo_url = \"javascript:alert(1)\"",
            "portal.logo_url",
        ),
        ("[portal]\nprovider_name = \"\"", "portal.provider_name"),
        (
            "[portal]\nsession_lifetime = \"0s\"",
            "portal.session_lifetime",
        ),
    ] {
        let bad: Settings = toml::from_str(toml).unwrap();
        let err = bad.check().unwrap_err().to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

#[test]
fn the_fresh_reserve_defaults_to_a_quarter_of_the_workers_and_leaves_retries_one() {
    let d = Settings::default();
    assert_eq!(d.delivery.fresh_reserve(), 16);
    let s: Settings = toml::from_str("[delivery]\nworkers = 8\n").unwrap();
    assert_eq!(s.delivery.fresh_reserve(), 2);
    let s: Settings = toml::from_str("[delivery]\nworkers = 8\nfresh_reserve = 7\n").unwrap();
    s.check().unwrap();
    assert_eq!(s.delivery.fresh_reserve(), 7);
    let all: Settings = toml::from_str("[delivery]\nworkers = 8\nfresh_reserve = 8\n").unwrap();
    let err = all.check().unwrap_err().to_string();
    assert!(err.contains("delivery.fresh_reserve"), "{err}");
}

#[test]
fn retry_turns_default_to_twice_the_cores_and_are_at_least_one() {
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(Settings::default().delivery.retry_turns(), 2 * cores);
    let s: Settings = toml::from_str("[delivery]\nretry_turns = 3\n").unwrap();
    s.check().unwrap();
    assert_eq!(s.delivery.retry_turns(), 3);
    let zero: Settings = toml::from_str("[delivery]\nretry_turns = 0\n").unwrap();
    let err = zero.check().unwrap_err().to_string();
    assert!(err.contains("delivery.retry_turns"), "{err}");
}

#[test]
fn the_retry_concurrency_defaults_to_a_webhook_s_and_stays_within_it() {
    let d = Settings::default();
    assert_eq!(d.delivery.retry_concurrency(), 16);
    let two: Settings = toml::from_str("[delivery]\nper_webhook_concurrency = 2\n").unwrap();
    assert_eq!(two.delivery.retry_concurrency(), 2);
    let s: Settings = toml::from_str("[delivery]\nretry_concurrency = 4\n").unwrap();
    s.check().unwrap();
    assert_eq!(s.delivery.retry_concurrency(), 4);
    for bad in ["retry_concurrency = 0", "retry_concurrency = 17"] {
        let bad: Settings = toml::from_str(&format!("[delivery]\n{bad}\n")).unwrap();
        let err = bad.check().unwrap_err().to_string();
        assert!(err.contains("delivery.retry_concurrency"), "{err}");
    }
}
