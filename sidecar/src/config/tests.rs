use std::io::Write;

use super::*;

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut file = tempfile_in_target();
    file.1.write_all(toml.as_bytes()).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(Some(&file.0), &env, &Overrides::default())
}

fn tempfile_in_target() -> (PathBuf, std::fs::File) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "pf-sidecar-config-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.fpm.listen, "127.0.0.1:2620");
    assert_eq!(config.routes.from, "fpm");
    assert_eq!(config.routes.tables, vec![254]);
    assert_eq!(config.capacity, Capacities::default());
}

#[test]
fn the_file_then_the_environment_then_flags_win_in_that_order() {
    let toml = "[routes]\nfrom = \"kernel\"\n[general]\nlog_level = \"debug\"\n";
    let config = load(
        toml,
        &[
            ("PF_SIDECAR_GENERAL__LOG_LEVEL", "warn"),
            ("PF_SIDECAR_ROUTES__TABLES", "254,100"),
        ],
    )
    .unwrap();
    assert_eq!(config.routes.from, "kernel");
    assert_eq!(config.general.log_level, "warn");
    assert_eq!(config.routes.tables, vec![254, 100]);
}

#[test]
fn an_unknown_key_is_named_in_the_error() {
    let err = load("[fpm]\nlisten_port = 2620\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn a_bad_value_names_the_key_the_value_and_what_is_allowed() {
    let err = load("[routes]\nfrom = \"bgp\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("routes.from") && err.contains("\"bgp\"") && err.contains("kernel"),
        "{err}"
    );
}

#[test]
fn a_non_loopback_fpm_listener_needs_an_allow_list() {
    let err = load("[fpm]\nlisten = \"0.0.0.0:2620\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fpm.allow"), "{err}");
    assert!(load(
        "[fpm]\nlisten = \"0.0.0.0:2620\"\nallow = [\"192.0.2.1\"]\n",
        &[]
    )
    .is_ok());
}

#[test]
fn events_go_to_ipc_or_loopback_tcp_and_metrics_to_an_address_and_port() {
    for ok in [
        "[events]\nendpoint = \"ipc:///run/pf-sidecar/events\"\n",
        "[events]\nendpoint = \"tcp://127.0.0.1:9470\"\n",
        "[metrics]\nlisten = \"\"\n",
    ] {
        assert!(load(ok, &[]).is_ok(), "{ok}");
    }
    let err = load("[events]\nendpoint = \"tcp://192.0.2.1:9470\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("events.endpoint"), "{err}");
    let err = load("[metrics]\nlisten = \"localhost\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("metrics.listen"), "{err}");
}

#[test]
fn a_string_where_a_number_belongs_is_an_error_naming_the_key() {
    let err = load("[datapath]\nheartbeat_interval_ms = \"500\"\n", &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "`datapath.heartbeat_interval_ms` = \"500\": expected an integer, found a string; write 500 without quotes"
    );
    for (toml, key) in [
        ("[datapath]\ndry_run = \"true\"\n", "datapath.dry_run"),
        ("[capacity]\nnexthops = 1.5\n", "capacity.nexthops"),
        ("[routes]\ntables = [\"254\"]\n", "routes.tables"),
        ("[general]\ninterfaces = \"eth0\"\n", "general.interfaces"),
        ("[general]\ninterfaces = [1]\n", "general.interfaces"),
        ("[fpm]\nlisten = 2620\n", "fpm.listen"),
        ("general = 1\n", "general"),
    ] {
        let err = load(toml, &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("`{key}` = ")), "{toml}: {err}");
        assert!(err.contains("expected "), "{toml}: {err}");
    }
    // The environment is text by nature: numbers there are parsed.
    let config = load("", &[("PF_SIDECAR_DATAPATH__HEARTBEAT_INTERVAL_MS", "250")]).unwrap();
    assert_eq!(config.datapath.heartbeat_interval_ms, 250);
}

#[test]
fn lo_duplicates_and_bad_names_in_the_interface_list_are_refused() {
    for (list, says) in [
        ("[\"r0\", \"lo\"]", "lo is the loopback"),
        ("[\"r0\", \"r1\", \"r0\"]", "r0 is listed twice"),
        ("[\"../x\"]", "is not an interface name"),
        ("[\"\"]", "is not an interface name"),
        ("[\"a-name-longer-than-15\"]", "is not an interface name"),
    ] {
        let err = load(&format!("[general]\ninterfaces = {list}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`general.interfaces` = ") && err.contains(says),
            "{list}: {err}"
        );
    }
    assert!(load("[general]\ninterfaces = [\"eth0\", \"eth1.100\"]\n", &[]).is_ok());
}

#[test]
fn a_capacity_that_would_pin_gibibytes_is_refused_with_the_figure() {
    let err = load("[capacity]\nnexthops = 134217727\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("`capacity.nexthops` = 134217727: 1 to 4194304")
            && err.contains("would pin 10.0 GiB of kernel memory, 80 bytes each"),
        "{err}"
    );
    let defaults = load("", &[]).unwrap();
    assert_eq!(defaults.memory_warning(), None);
    let big = load("[capacity]\ntbl8_groups = 1048576\n", &[]).unwrap();
    let warning = big.memory_warning().expect("over 1 GiB");
    assert!(
        warning.contains("capacity.tbl8_groups 1.0 GiB"),
        "{warning}"
    );
}

#[test]
fn a_reload_names_what_it_cannot_apply() {
    let old = load("", &[]).unwrap();
    let new = load(
        "[general]\ninterfaces = [\"eth0\"]\n[datapath]\ndry_run = true\n[capacity]\nports = 64\n[fpm]\nreplay_quiet_ms = 500\n",
        &[],
    )
    .unwrap();
    assert_eq!(old.needs_restart(&new), vec!["capacity", "fpm"]);
    assert!(old.needs_restart(&old).is_empty());
}

#[test]
fn a_named_file_that_does_not_exist_is_an_error() {
    let err = Config::load_from(
        Some(Path::new("/nonexistent/pf.toml")),
        &[],
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"));
}

#[test]
fn fpm_users_and_session_bounds_have_defaults_and_limits() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.fpm.allowed_users, vec!["frr", "root"]);
    assert_eq!(
        (
            config.fpm.idle_timeout_ms,
            config.fpm.frame_timeout_ms,
            config.routes.stale_after_ms
        ),
        (10_000, 5_000, 30_000)
    );
    assert!(
        config.fpm_allowed_users().unwrap().contains(0),
        "root is always there"
    );
    let config = load("", &[("PF_SIDECAR_FPM__ALLOWED_USERS", "frr,1001")]).unwrap();
    assert_eq!(config.fpm.allowed_users, vec!["frr", "1001"]);
    assert!(config.fpm_allowed_users().unwrap().contains(1001));
    for (toml, key) in [
        ("[fpm]\nidle_timeout_ms = 0\n", "fpm.idle_timeout_ms"),
        ("[fpm]\nframe_timeout_ms = 99\n", "fpm.frame_timeout_ms"),
        (
            "[routes]\nstale_after_ms = 3600001\n",
            "routes.stale_after_ms",
        ),
        ("[fpm]\nallowed_users = [\"\"]\n", "fpm.allowed_users"),
        (
            "[fpm]\nallowed_users = [\"4294967296\"]\n",
            "fpm.allowed_users",
        ),
    ] {
        let err = load(toml, &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("`{key}` = ")), "{toml}: {err}");
    }
    let nobody_here = load(
        "[fpm]\nallowed_users = [\"pf-sidecar-no-such-user\"]\n",
        &[],
    )
    .unwrap();
    let err = nobody_here.fpm_allowed_users().unwrap_err().to_string();
    assert!(
        err.contains("fpm.allowed_users") && err.contains("pf-sidecar-no-such-user not found"),
        "{err}"
    );
}

mod example {
    use crate::config::*;

    const EXAMPLE: &str = include_str!("../../../frr-integration/pf-sidecar.toml");

    #[test]
    fn the_commented_example_parses_to_the_defaults() {
        let path =
            std::env::temp_dir().join(format!("pf-sidecar-example-{}.toml", std::process::id()));
        std::fs::write(&path, EXAMPLE).unwrap();
        let from_example = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
        let empty =
            std::env::temp_dir().join(format!("pf-sidecar-empty-{}.toml", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        let defaults = Config::load_from(Some(&empty), &[], &Overrides::default()).unwrap();
        assert_eq!(from_example, defaults);
    }

    #[test]
    fn every_default_key_is_documented_in_the_example() {
        for line in DEFAULTS.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap().trim();
            assert!(
                EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} is not in the example"
            );
        }
    }

    #[test]
    fn a_key_that_reads_as_an_array_index_is_refused_not_allocated() {
        for text in [
            "[ \"6[ 33333333331111]\"]\n",
            "[general]\n\"log_level[99999999999]\" = 1\n",
            "[general]\nx = { \"a[99999999999]\" = 1 }\n",
        ] {
            let err = Config::load_text(
                Some(text),
                Path::new("bad.toml"),
                &[],
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("keys are names"), "{text}: {err}");
        }
    }
}
