//! Starting the binary: settings precedence and clean failures.

use std::sync::Arc;

use crate::helpers::{TestServer, assert_clean_failure, command, stderr};

#[test]
fn version_and_help_work() {
    let dir = tempfile::tempdir().unwrap();

    let version = command(dir.path()).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kaggleingest "));

    let help = command(dir.path()).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
}

#[test]
fn unknown_and_invalid_config_keys_are_all_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kaggleingest.toml"),
        "colour = \"blue\"\nbcrypt_cost = \"high\"\n",
    )
    .unwrap();

    let out = command(dir.path()).arg("serve").output().unwrap();

    assert_clean_failure(&out, "colour");
    assert!(stderr(&out).lines().next().unwrap().contains("bcrypt_cost"));
}

#[test]
fn a_bad_environment_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();

    let out = command(dir.path())
        .arg("serve")
        .env("KAGGLEINGEST_BCRYPT_COST", "lots")
        .output()
        .unwrap();

    assert_clean_failure(&out, "lots");
}

#[test]
fn an_out_of_range_cost_is_refused() {
    let dir = tempfile::tempdir().unwrap();

    let out = command(dir.path())
        .args(["serve", "--bcrypt-cost", "99"])
        .output()
        .unwrap();

    assert_clean_failure(&out, "bcrypt_cost = 99");
}

#[test]
fn a_port_in_use_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let out = command(dir.path())
        .args(["serve", "--bind", &addr, "--db", "k.db"])
        .output()
        .unwrap();

    assert_clean_failure(&out, &format!("cannot listen on {addr}"));
}

#[test]
fn an_unusable_database_path_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();

    let out = command(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--db", "not-a-dir/k.db"])
        .output()
        .unwrap();

    assert_clean_failure(&out, "cannot open database not-a-dir/k.db");
}

#[test]
fn flags_beat_env_which_beats_the_file() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join("kaggleingest.toml"), "bcrypt_cost = 5\n").unwrap();
    let cost_in_log = |extra: &[&str], env: &[(&str, &str)]| {
        let server = TestServer::start_in(Arc::clone(&dir), extra, env);
        let log = server.log_so_far();
        drop(server);
        log.split("bcrypt_cost=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .to_owned()
    };

    assert_eq!(cost_in_log(&[], &[]), "5", "file over default");
    assert_eq!(
        cost_in_log(&[], &[("KAGGLEINGEST_BCRYPT_COST", "6")]),
        "6",
        "env over file"
    );
    assert_eq!(
        cost_in_log(
            &["--bcrypt-cost", "7"],
            &[("KAGGLEINGEST_BCRYPT_COST", "6")]
        ),
        "7",
        "flag over env"
    );
}

#[test]
fn an_explicit_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();

    let out = command(dir.path())
        .args(["serve", "--config", "missing.toml"])
        .output()
        .unwrap();

    assert_clean_failure(&out, "missing.toml");
}

#[test]
fn a_database_url_refused_anywhere_never_shows_its_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "db = \"postgres://app:Hunter2pw@db.internal/k\" x\n",
    )
    .unwrap();
    let bad_urls = [
        "postgres://app:Hunter2pw@db.internal/k?sslmode=sometimes",
        "postgres://app:Hunter2pw@db.internal/k?no_such_option=1",
        "postgres://app:Hunter?2pw@db.internal/k?sslmode=require",
        "postgress://app:Hunter2pw@db.internal/k",
        " postgres://app:Hunter2pw@db.internal/k",
    ];
    let mut runs = Vec::new();
    for url in bad_urls {
        for (how, args) in [
            ("flag", vec!["serve", "--db", url]),
            ("copy", vec!["copy", "--from", "x.db", "--to", url]),
        ] {
            runs.push((
                format!("{how} {url:?}"),
                command(dir.path()).args(&args).output().unwrap(),
            ));
        }
        let by_env = command(dir.path())
            .arg("serve")
            .env("KAGGLEINGEST_DB", url)
            .output();
        runs.push((format!("env {url:?}"), by_env.unwrap()));
    }
    let broken = command(dir.path())
        .args(["serve", "--config", "broken.toml"])
        .output();
    runs.push(("a broken config file".into(), broken.unwrap()));

    for (what, out) in &runs {
        assert!(!out.status.success(), "{what} was accepted");
        let err = stderr(out);
        assert!(!err.contains("Hunter"), "{what} shows the password: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    // `--help` shows no value from the environment.
    let help = command(dir.path())
        .args(["serve", "--help"])
        .env("KAGGLEINGEST_DB", "postgres://app:Hunter2pw@db.internal/k")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("Hunter"));
}
